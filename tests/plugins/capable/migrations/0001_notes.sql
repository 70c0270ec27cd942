-- Applied first (lexical order), once, in its own transaction.
CREATE TABLE notes (
    id   INTEGER PRIMARY KEY,
    text TEXT NOT NULL
);
