-- A track's rows in learner order, for `export` and the admins' export endpoint (and the
-- cascade when a track is deleted). Neither column ever changes, so the applier's row
-- updates stay heap-only (HOT) as before.
create index user_progress_by_track on user_progress (track_id, user_id);
