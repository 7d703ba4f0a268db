"""``pgcast demo``: an orders app (REST CRUD + live page) on an embedded PostgreSQL."""
