-- The customer is now on every row (0101, 0102): the constraints of 0100 are
-- validated (a scan under SHARE UPDATE EXCLUSIVE: reads and writes go on), then the
-- columns made NOT NULL, which PostgreSQL proves from the valid constraints without
-- a second scan (a moment of ACCESS EXCLUSIVE, bounded by lock_timeout), and the
-- constraints that said the same dropped.
SET LOCAL lock_timeout = '5s';

ALTER TABLE delivery_attempts VALIDATE CONSTRAINT delivery_attempts_tenant_named;
ALTER TABLE message_bodies VALIDATE CONSTRAINT message_bodies_tenant_named;
ALTER TABLE message_bounces VALIDATE CONSTRAINT message_bounces_tenant_named;
ALTER TABLE device_sources VALIDATE CONSTRAINT device_sources_tenant_named;
ALTER TABLE session_transcripts VALIDATE CONSTRAINT session_transcripts_tenant_of_device;

ALTER TABLE delivery_attempts ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE message_bodies ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE message_bounces ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE device_sources ALTER COLUMN tenant_id SET NOT NULL;

ALTER TABLE delivery_attempts DROP CONSTRAINT delivery_attempts_tenant_named;
ALTER TABLE message_bodies DROP CONSTRAINT message_bodies_tenant_named;
ALTER TABLE message_bounces DROP CONSTRAINT message_bounces_tenant_named;
ALTER TABLE device_sources DROP CONSTRAINT device_sources_tenant_named;
