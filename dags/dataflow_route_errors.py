"""airflow-dataflow: reports every broken *.route.yaml as an Airflow DAG import error.

Kept apart from dataflow_routes.py so that a broken route never hides the valid ones.
"""

from airflow_dataflow.loader import raise_route_errors

raise_route_errors(__file__)
