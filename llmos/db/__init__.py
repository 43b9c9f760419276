"""The database: SQLAlchemy 2 tables, Alembic migrations run at open, and the query module."""
