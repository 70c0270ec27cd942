-- Each transaction of POST /tx inserts its id into both `entries` and `receipts` and moves 1
-- from account 1 to account 2: after any crash the two id sets are equal, the balances sum to
-- 1000000 and account 2 holds as much as there are entries.
CREATE TABLE entries (
    id INTEGER PRIMARY KEY
);
CREATE TABLE receipts (
    id INTEGER PRIMARY KEY
);
CREATE TABLE accounts (
    id      INTEGER PRIMARY KEY,
    balance INTEGER NOT NULL
);
INSERT INTO accounts (id, balance) VALUES (1, 1000000), (2, 0);
