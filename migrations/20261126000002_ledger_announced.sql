-- Whether an applied command's event is known to be stored in the events stream. The applier
-- sets it once JetStream acknowledged the event; a sweep re-announces applied commands left
-- unset for too long. Without it, an applier that died between its commit and its event's
-- publish, whose command message the broker then lost, would leave the change unannounced for
-- ever: the projection is right, but caches and agents never hear of that version.
-- Rows recorded before this column existed count as announced (they were, or never will be).
alter table progress_ledger add column announced boolean not null default true;
alter table progress_ledger alter column announced set default false;

-- Small: it holds only what is waiting for JetStream's ack, normally a few batches' worth.
create index progress_ledger_unannounced on progress_ledger (applied_at)
    where outcome = 'applied' and not announced;
