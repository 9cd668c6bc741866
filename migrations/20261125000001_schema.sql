-- The tracks, their units, the progress projection and the command ledger.
-- Plain PostgreSQL; the same files run on Supabase.

-- A learning track: an ordered list of units.
create table learning_tracks (
    id uuid primary key,
    slug text not null unique check (slug <> ''),
    title text not null check (title <> ''),
    created_at timestamptz not null default now()
);

create table track_units (
    id uuid primary key,
    track_id uuid not null references learning_tracks (id) on delete cascade,
    position int not null check (position >= 0),
    title text not null,
    kind text not null check (kind in ('lesson', 'assessment')),
    unique (track_id, position),
    -- target of the composite foreign key below: a current unit must belong to its track
    unique (track_id, id)
);

-- One row per (learner, track): the projection the applier maintains and the API serves.
create table user_progress (
    user_id uuid not null,
    track_id uuid not null references learning_tracks (id) on delete cascade,
    status text not null default 'in_progress' check (status in ('in_progress', 'completed')),
    current_unit_id uuid null,
    -- a set, kept sorted and free of duplicates by every writer
    completed_unit_ids uuid[] not null default '{}',
    -- { "<unit_id>": { "attempts": { "<attempt_id>": {score, max_score, passed, at} } } }
    assessment_results jsonb not null default '{}' check (jsonb_typeof(assessment_results) = 'object'),
    started_at timestamptz not null default now(),
    completed_at timestamptz null,
    updated_at timestamptz not null default now(),
    -- seq of the command that last set current_unit_id (last writer wins by seq)
    last_seq bigint not null default 0 check (last_seq >= 0),
    -- +1 per real change; the ETag, and the order of cache updates
    version bigint not null default 1 check (version >= 1),
    primary key (user_id, track_id),
    foreign key (track_id, current_unit_id) references track_units (track_id, id),
    check ((status = 'completed') = (completed_at is not null))
);

-- The idempotency ledger: one row per command ever seen, whatever its outcome. It is also the
-- learner's audit history and the source for re-publishing an event after a crash.
create table progress_ledger (
    command_id uuid primary key,
    user_id uuid not null,
    -- no foreign key: a rejected command may name a track that does not exist
    track_id uuid not null,
    -- the command's seq; reconcile asks which seqs of a learner have been applied
    seq bigint not null,
    kind text not null,
    payload jsonb not null,
    occurred_at timestamptz not null,
    applied_at timestamptz not null default now(),
    outcome text not null check (outcome in ('applied', 'noop', 'rejected')),
    reason text null,
    -- the progress version after this command; null when rejected
    version_after bigint null,
    check ((outcome = 'rejected') = (reason is not null))
);

create index progress_ledger_learner on progress_ledger (user_id, track_id, seq);
