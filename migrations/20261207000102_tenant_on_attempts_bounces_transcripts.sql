-- The customer on attempts, bounces and transcripts written before 0100. Nothing
-- but the purge changes these rows once written, so the UPDATEs' row locks keep no
-- writer waiting (their ROW EXCLUSIVE table lock does not conflict with inserts).
-- One pass over what the retention keeps; autovacuum reclaims the old versions.
UPDATE delivery_attempts a SET tenant_id = m.tenant_id
  FROM messages m WHERE m.id = a.message_id AND a.tenant_id IS NULL;
UPDATE message_bounces b SET tenant_id = m.tenant_id
  FROM messages m WHERE m.id = b.message_id AND b.tenant_id IS NULL;
UPDATE session_transcripts t SET tenant_id = d.tenant_id
  FROM devices d WHERE d.id = t.device_id AND t.tenant_id IS NULL;
