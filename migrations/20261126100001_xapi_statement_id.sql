-- xAPI statement ids and registrations (src/xapi/statement.rs, docs/xapi.md), computed as the
-- service computes them: UUIDv8 from the first 128 bits of SHA-256(namespace ‖ ids), with the
-- version (8) and variant (10) bits set. The read view finds a statement by its id through the
-- index below, and a learner's statements on one track by their registration. Only built-in
-- functions, so no extension and no search path are needed.

-- statement id = uuid8(sha256(STATEMENT_NAMESPACE ‖ command_id))
create function xapi_statement_id(command_id uuid) returns uuid
    language sql immutable strict parallel safe
as $$
    select encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 128),
                           8, (get_byte(h, 8) & 63) | 128), 'hex')::uuid
    from (select substring(sha256(uuid_send('6c0b6a1e-58d4-4f0e-9a57-3a0e2f1c5d01'::uuid)
                                  || uuid_send(command_id)) from 1 for 16)) as digest (h)
$$;

-- registration = uuid8(sha256(REGISTRATION_NAMESPACE ‖ user_id ‖ track_id))
create function xapi_registration(user_id uuid, track_id uuid) returns uuid
    language sql immutable strict parallel safe
as $$
    select encode(set_byte(set_byte(h, 6, (get_byte(h, 6) & 15) | 128),
                           8, (get_byte(h, 8) & 63) | 128), 'hex')::uuid
    from (select substring(sha256(uuid_send('6c0b6a1e-58d4-4f0e-9a57-3a0e2f1c5d02'::uuid)
                                  || uuid_send(user_id) || uuid_send(track_id)) from 1 for 16))
        as digest (h)
$$;

-- only applied commands make statements
create index progress_ledger_xapi_statement on progress_ledger (xapi_statement_id(command_id))
    where outcome = 'applied';
