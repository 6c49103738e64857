"""ganzoo: retrain a zoo of GAN families with Prefect, Ray Train, DVC and MLflow.

No network at run time: importing the package switches off the usage reporting
that Prefect, Ray, DVC and MLflow would otherwise send (a user's explicit
setting of any of these variables wins).
"""

import os

OFFLINE_ENVIRONMENT = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
}

for _name, _value in OFFLINE_ENVIRONMENT.items():
    os.environ.setdefault(_name, _value)
