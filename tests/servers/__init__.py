"""Real servers (Celery, uWSGI, uvicorn, gunicorn) and plain scripts run as subprocesses against the local
collector; every messageId an app logs is counted against what arrived."""
