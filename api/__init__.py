"""The REST service: `create_app(settings)` builds the FastAPI app; routes live one per file in api/routes."""
