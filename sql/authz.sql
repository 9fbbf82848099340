-- Authorization catalog of vecguard: the key table, privileges and check_roles().
-- Runs after the Rust functions of schema vecguard exist (see src/authz/sql.rs).

-- Ordinary roles must reach the claim functions that policies call.
GRANT USAGE ON SCHEMA vecguard TO PUBLIC;

-- Verification keys. Readable and writable only by its owner (the role that created the
-- extension); verification reads it with the user id switched to that owner, and
-- add_key/add_jwks/revoke_key write it the same way.
CREATE TABLE vecguard.keys (
    kid        text PRIMARY KEY,
    alg        text NOT NULL,
    format     text NOT NULL CHECK (format IN ('material', 'jwk')),
    material   text NOT NULL,
    thumbprint text,
    added_at   timestamptz NOT NULL DEFAULT pg_catalog.now(),
    added_by   name NOT NULL DEFAULT pg_catalog.session_user(),
    revoked_at timestamptz
);
REVOKE ALL ON vecguard.keys FROM PUBLIC;
-- Keys are configuration: pg_dump must carry them along with the extension.
SELECT pg_catalog.pg_extension_config_dump('vecguard.keys', '');

-- Tables vecguard.protect() protects: the arguments it was given, the protected table a
-- partition or child took its protection from, the state protect() left
-- (vecguard.protection_state) and the last different state a superuser's DDL left (seen).
-- Written only by vecguard's functions, as this table's owner; readable by everyone (the
-- same facts are in pg_policy and pg_class).
CREATE TABLE vecguard.protected (
    relid  regclass PRIMARY KEY,
    args   jsonb NOT NULL,
    parent regclass,
    state  jsonb NOT NULL,
    seen   jsonb
);
REVOKE ALL ON vecguard.protected FROM PUBLIC;
GRANT SELECT ON vecguard.protected TO PUBLIC;
SELECT pg_catalog.pg_extension_config_dump('vecguard.protected', '');

-- What decides a table's protection: row level security on and forced, and the text of
-- each vecguard policy (permissive or not, command, roles, USING, WITH CHECK).
CREATE FUNCTION vecguard.protection_state(rel regclass)
RETURNS jsonb
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    SELECT jsonb_build_object(
        'rls', c.relrowsecurity,
        'force', c.relforcerowsecurity,
        'policies', COALESCE((
            SELECT jsonb_object_agg(p.polname, jsonb_build_array(
                p.polpermissive, p.polcmd::text, p.polroles::text,
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid)))
            FROM pg_policy p
            WHERE p.polrelid = c.oid AND p.polname LIKE 'vecguard\_%'), '{}'::jsonb))
    FROM pg_class c WHERE c.oid = rel
$$;

-- After every DDL command: protect new partitions and inheritance children of protected
-- tables, and refuse or record changes of their row level security (src/authz/protection.rs).
CREATE FUNCTION vecguard.ddl_guard()
RETURNS event_trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM vecguard.enforce_protection();
END
$$;
CREATE EVENT TRIGGER vecguard_ddl_guard ON ddl_command_end
    EXECUTE FUNCTION vecguard.ddl_guard();

-- Roles and objects that defeat protect(): PostgreSQL exempts superusers and BYPASSRLS
-- roles from row level security, table owners unless FORCE is set, and a view reads its
-- tables with its owner's rights unless it is security_invoker.
CREATE FUNCTION vecguard.check_roles()
RETURNS TABLE (role name, problem text, object regclass)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
    WITH protected AS (
        SELECT c.oid, c.relowner, c.relrowsecurity, c.relforcerowsecurity
        FROM pg_class c
        WHERE EXISTS (SELECT 1 FROM pg_policy p
                      WHERE p.polrelid = c.oid AND p.polname LIKE 'vecguard\_%')
    )
    SELECT r.rolname, 'superuser: bypasses row level security on every table', NULL::regclass
    FROM pg_roles r WHERE r.rolsuper
    UNION ALL
    SELECT r.rolname, 'bypassrls: bypasses row level security on every table', NULL::regclass
    FROM pg_roles r WHERE r.rolbypassrls AND NOT r.rolsuper
    UNION ALL
    SELECT pg_get_userbyid(t.relowner),
           'table owner without FORCE ROW LEVEL SECURITY: sees every row', t.oid::regclass
    FROM protected t WHERE t.relrowsecurity AND NOT t.relforcerowsecurity
    UNION ALL
    SELECT pg_get_userbyid(t.relowner),
           'row level security is disabled: vecguard policies are not applied', t.oid::regclass
    FROM protected t WHERE NOT t.relrowsecurity
    UNION ALL
    SELECT DISTINCT pg_get_userbyid(v.relowner),
           'view reads a protected table with the rights of a role that bypasses row level security; make it security_invoker or change its owner',
           v.oid::regclass
    FROM pg_class v
    JOIN pg_rewrite rw ON rw.ev_class = v.oid
    JOIN pg_depend d ON d.classid = 'pg_rewrite'::regclass AND d.objid = rw.oid
                    AND d.refclassid = 'pg_class'::regclass
    JOIN protected t ON t.oid = d.refobjid AND t.oid <> v.oid
    JOIN pg_roles o ON o.oid = v.relowner
    WHERE v.relkind IN ('v', 'm')
      AND (o.rolsuper OR o.rolbypassrls
           OR (o.oid = t.relowner AND NOT t.relforcerowsecurity))
      AND (v.relkind = 'm' OR NOT EXISTS (
            SELECT 1 FROM unnest(v.reloptions) opt
            WHERE lower(opt) IN ('security_invoker=true', 'security_invoker=on',
                                 'security_invoker=1', 'security_invoker=yes')))
    UNION ALL
    SELECT pg_get_userbyid(c.relowner),
           'inherits from a protected table but is not protected by vecguard',
           c.oid::regclass
    FROM pg_inherits i
    JOIN vecguard.protected p ON p.relid::oid = i.inhparent
    JOIN pg_class c ON c.oid = i.inhrelid
    WHERE NOT EXISTS (SELECT 1 FROM vecguard.protected q WHERE q.relid::oid = i.inhrelid)
    UNION ALL
    SELECT pg_get_userbyid(c.relowner),
           'row level security differs from what vecguard.protect() wrote; run protect() again',
           c.oid::regclass
    FROM vecguard.protected p
    JOIN pg_class c ON c.oid = p.relid::oid
    WHERE vecguard.protection_state(p.relid) IS DISTINCT FROM p.state
    ORDER BY 1, 2, 3
$$;

-- Administration is for superusers and the roles a DBA grants it to explicitly.
DO $$
DECLARE
    f regprocedure;
BEGIN
    FOR f IN
        SELECT p.oid FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'vecguard'::regnamespace
          AND p.proname IN ('add_key', 'add_jwks', 'revoke_key', 'protect', 'unprotect',
                            'audit_log', 'audit_verify', 'check_roles')
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', f);
    END LOOP;
END
$$;
