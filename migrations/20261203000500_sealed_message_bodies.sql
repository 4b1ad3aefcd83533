-- Queued message bodies are sealed with the master key (AES-256-GCM, a fresh nonce
-- per message, the message id as associated data). Bodies queued before this
-- migration stay readable in clear until delivered or re-sealed by
-- `mailbridge rotate-master-key`; `sealed` tells the two apart.
ALTER TABLE message_bodies ADD COLUMN sealed boolean NOT NULL DEFAULT false;
