-- vecguard 0.1.0 -> 0.2.0 (ALTER EXTENSION vecguard UPDATE). tests/test_upgrade.py checks
-- that an upgraded database has exactly the objects of a fresh CREATE EXTENSION.
\echo Use "ALTER EXTENSION vecguard UPDATE" to load this file. \quit
