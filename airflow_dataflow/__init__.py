"""airflow-dataflow: declarative data routing on Apache Airflow 3."""

__version__ = "0.1.0"
