-- Graph takes requests of at most 4 MB; a customer whose Exchange also allows SMTP
-- AUTH for the app can have larger messages go by SMTP XOAUTH2 instead.
ALTER TABLE tenants ADD COLUMN smtp_for_large_messages boolean NOT NULL DEFAULT false;
