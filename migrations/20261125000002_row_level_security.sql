-- Row-level security for Supabase: a signed-in user reads only their own progress and ledger.
-- Created only where the `auth` schema exists (Supabase), so plain PostgreSQL runs this file
-- as a no-op. The service itself connects as the tables' owner, which RLS does not restrict.
do $$
begin
    if exists (select 1 from pg_namespace where nspname = 'auth') then
        alter table user_progress enable row level security;
        alter table progress_ledger enable row level security;
        alter table learning_tracks enable row level security;
        alter table track_units enable row level security;

        create policy user_progress_read_own on user_progress
            for select using (user_id = auth.uid());
        create policy progress_ledger_read_own on progress_ledger
            for select using (user_id = auth.uid());
        -- tracks are a catalogue: anyone signed in may read them
        create policy learning_tracks_read on learning_tracks
            for select using (auth.uid() is not null);
        create policy track_units_read on track_units
            for select using (auth.uid() is not null);
    end if;
end
$$;
