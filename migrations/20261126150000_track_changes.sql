-- Track content changes: units added to, removed from or moved within a track that learners
-- are already on (`learning-progress tracks add-unit | remove-unit | move-unit`).

-- Bumped by every change of a track's units. Appliers re-read a track's unit set when it
-- moved; a running workflow keeps the newest unit list it was told of.
alter table learning_tracks add column units_version bigint not null default 0
    check (units_version >= 0);

-- One row per change of a track's units: what changed, and how many learners it rewrote.
create table track_changes (
    track_id uuid not null references learning_tracks (id) on delete cascade,
    units_version bigint not null check (units_version >= 1),
    kind text not null check (kind in ('unit_added', 'unit_removed', 'unit_moved')),
    unit_id uuid not null,
    -- the unit's position after the change; null when it was removed
    position int null,
    -- whether learners who had completed the track were reopened
    reopen boolean not null default false,
    total_units int not null check (total_units >= 1),
    learners int not null default 0,
    changed_at timestamptz not null default now(),
    primary key (track_id, units_version)
);

-- The outbox of track changes: the `track_changed` event of every learner a change rewrote,
-- written in the change's transaction and marked once JetStream stored it. The applier's
-- announce sweep publishes what is left unmarked, so a crash between the commit and the
-- publish loses no event. It is also each learner's history across changes: `through_seq` is
-- the highest seq in the learner's ledger when the change was applied, so the snapshot after a
-- later command is rebuilt from this one and the commands after it.
create table track_change_events (
    event_id uuid primary key,
    user_id uuid not null,
    track_id uuid not null,
    units_version bigint not null,
    -- the learner's progress version this event announces
    version bigint not null check (version >= 1),
    through_seq bigint not null check (through_seq >= 0),
    event jsonb not null,
    announced boolean not null default false,
    created_at timestamptz not null default now(),
    unique (user_id, track_id, units_version),
    foreign key (track_id, units_version) references track_changes (track_id, units_version)
        on delete cascade
);

create index track_change_events_learner on track_change_events (user_id, track_id, version);
-- Small: it holds only what is waiting for JetStream's ack.
create index track_change_events_unannounced on track_change_events (created_at)
    where not announced;

-- On Supabase, as for the other tables: a user reads only their own events; changes are
-- part of the catalogue.
do $$
begin
    if exists (select 1 from pg_namespace where nspname = 'auth') then
        alter table track_changes enable row level security;
        alter table track_change_events enable row level security;
        create policy track_changes_read on track_changes
            for select using (auth.uid() is not null);
        create policy track_change_events_read_own on track_change_events
            for select using (user_id = auth.uid());
    end if;
end
$$;
