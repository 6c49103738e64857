-- Runs once, when the postgres volume is empty: POSTGRES_DB (mlflow) exists already;
-- Prefect's server gets its own database in the same instance.
CREATE DATABASE prefect;
