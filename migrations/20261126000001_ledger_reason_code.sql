-- The short, stable reason of a rejected command (`foreign_unit`, `unknown_track`, …), beside
-- the human-readable `reason`: a redelivered rejected command re-sends its dead letter under
-- this reason, so a crash between commit and dead letter loses neither.
alter table progress_ledger add column reason_code text null;
