"""The sample app: a table to read, a slow query, a view that never touches the database."""
