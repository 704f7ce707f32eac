"""The logging part of a Django ``settings.py`` that sends events with dreamdata-logging.

Django passes ``LOGGING`` to ``logging.config.dictConfig`` at startup (after its own defaults), so
every handler keyword works here. Keep the write key out of settings: set ``DREAMDATA_WRITE_KEY``
(and ``DREAMDATA_ENDPOINT`` if not Dreamdata's) in the environment. Then, in a view::

    import logging
    from dreamdata_logging import track

    logging.getLogger("analytics").info("Signed Up", extra=track(user_id=str(request.user.pk)))
"""

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {
        "console": {"class": "logging.StreamHandler", "level": "WARNING"},
        "dreamdata": {
            "class": "dreamdata_logging.DreamdataHandler",
            "level": "INFO",
            "flush_interval": 1.0,
            "shutdown_timeout": 5.0,
        },
    },
    "loggers": {
        "analytics": {"handlers": ["dreamdata"], "level": "INFO", "propagate": False},
    },
    "root": {"handlers": ["console"], "level": "WARNING"},
}
