-- History moved out of Redis: the events of passivated and closed conversations, the
-- dedupe keys that logged them, and the digests of the actions admitted to them.
-- A conversation's archived ids are 0 .. meta.archived - 1 (its Redis record says
-- where Redis starts); rows are written once and never changed.

-- One logged event, as its JSON exactly as Redis held it (and clients got it).
CREATE TABLE events (
    conversation text NOT NULL,
    id bigint NOT NULL,
    body text NOT NULL,
    PRIMARY KEY (conversation, id)
);

-- A dedupe key ("once") of the append that logged events first_id .. first_id + count - 1.
CREATE TABLE once_keys (
    conversation text NOT NULL,
    key text NOT NULL,
    first_id bigint NOT NULL,
    count integer NOT NULL,
    PRIMARY KEY (conversation, key)
);

-- An admitted action id and the digest of its content (one content per id).
CREATE TABLE actions (
    conversation text NOT NULL,
    action_id text NOT NULL,
    digest text NOT NULL,
    PRIMARY KEY (conversation, action_id)
);
