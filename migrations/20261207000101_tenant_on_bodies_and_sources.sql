-- The customer on bodies and familiar sources written before 0100. Both tables are
-- small (bodies of waiting messages only; a source per device) and written by the
-- hot paths, so they are filled in a short transaction of their own: a settlement
-- deleting a body, or a login refreshing a source, waits for it at most.
UPDATE message_bodies b SET tenant_id = m.tenant_id
  FROM messages m WHERE m.id = b.message_id AND b.tenant_id IS NULL;
UPDATE device_sources s SET tenant_id = d.tenant_id
  FROM devices d WHERE d.id = s.device_id AND s.tenant_id IS NULL;
