-- The PostgreSQL twin of ../0001_ledger.sql: the same tables, with 64-bit integers.
CREATE TABLE entries (
    id BIGINT PRIMARY KEY
);
CREATE TABLE receipts (
    id BIGINT PRIMARY KEY
);
CREATE TABLE accounts (
    id      BIGINT PRIMARY KEY,
    balance BIGINT NOT NULL
);
INSERT INTO accounts (id, balance) VALUES (1, 1000000), (2, 0);
