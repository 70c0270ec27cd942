-- Needs the table of 0001; inserts one note.
CREATE TABLE tags (
    note_id INTEGER NOT NULL REFERENCES notes (id),
    tag     TEXT NOT NULL
);
INSERT INTO notes (text) VALUES ('seeded by 0002');
