"""The results database: SQLAlchemy models, engine set-up and queries."""
