-- The stack's own record of the VPS it ordered: fleet.vps_instances rows the toolkit registers.
--
-- Every sending IP the reputation checker and the warm-up job act on is a fleet.smtp_ip_addresses row of a
-- fleet.vps_instances row. The stack that orders a node registers both (modules/postgres/fleet_registry.py,
-- as the tier's admin) and marks the VPS row with registered_by = 'pulumi:<project>/<stack>/<node>': a value
-- only that stack sets. It changes or removes a row only when the row's id is the one in its state *and* the
-- mark is its own; a row of the same Hostwinds id without the mark is not ours and stops the step.

ALTER TABLE fleet.vps_instances ADD COLUMN registered_by text;
COMMENT ON COLUMN fleet.vps_instances.registered_by IS
    'pulumi:<project>/<stack>/<node> of the stack that ordered and registered this VPS; NULL: registered by hand';
CREATE UNIQUE INDEX idx_vps_instances_registered_by ON fleet.vps_instances (registered_by)
    WHERE registered_by IS NOT NULL;
