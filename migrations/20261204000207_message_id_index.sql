-- no-transaction
-- Finds the message an NDR is about by its Message-ID (see 0206); built without
-- blocking the edge's inserts.
CREATE INDEX CONCURRENTLY IF NOT EXISTS messages_message_id_header ON messages (tenant_id, message_id_header)
    WHERE message_id_header IS NOT NULL;
