# MLflow tracking server for infra/compose.yaml: the same mlflow version as this project's venv
# (client and server should match), plus the PostgreSQL driver and boto3 for MinIO artifacts,
# which the stock mlflow image lacks.
FROM python:3.11-slim
ARG MLFLOW_VERSION=3.17.2
RUN pip install --no-cache-dir "mlflow==${MLFLOW_VERSION}" psycopg2-binary boto3
