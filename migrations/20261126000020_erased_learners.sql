-- Tombstones of erased learners (`learning-progress erase`): the learner's rows and ledger are
-- gone, and this row is all that remains of them, so that a command published before the
-- erasure (a redelivery, a workflow's last publish) is refused instead of re-creating their
-- progress. A command that occurred after `erased_at` is accepted again when it starts a track:
-- the learner started again. Erasing again moves `erased_at` forward.
create table erased_learners (
    user_id uuid primary key,
    erased_at timestamptz not null default now()
);

do $$
begin
    if exists (select 1 from pg_namespace where nspname = 'auth') then
        -- nothing here is for learners to read; only the service (the owner) uses it
        alter table erased_learners enable row level security;
    end if;
end
$$;
