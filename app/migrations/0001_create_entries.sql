-- Guestbook entries.
--
-- The API validates lengths too; the CHECK constraints keep the table honest
-- when someone writes to it directly (psql, a future job). char_length counts
-- characters, matching the API's rule, not bytes.
CREATE TABLE entries (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name       TEXT        NOT NULL CHECK (char_length(name) BETWEEN 1 AND 64),
    message    TEXT        NOT NULL CHECK (char_length(message) BETWEEN 1 AND 500),
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Serves "latest N entries" without sorting the whole table.
CREATE INDEX entries_created_at_id_idx ON entries (created_at DESC, id DESC);
