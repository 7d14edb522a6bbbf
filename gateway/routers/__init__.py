"""One APIRouter per resource; each endpoint states the roles it admits."""
