-- Message bodies are short-lived (deleted once delivered) and mostly base64 or
-- already compressed attachments: storing them uncompressed saves the CPU of
-- compressing every body on commit and decompressing it for delivery.
ALTER TABLE message_bodies ALTER COLUMN body SET STORAGE EXTERNAL;
