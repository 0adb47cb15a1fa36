"""airflow-dataflow: one Airflow DAG for every *.route.yaml under the dags folder.

Copy this file (and dataflow_route_errors.py) into your dags folder. Broken route files are
reported by dataflow_route_errors.py as import errors; the valid ones still load here.
"""

from airflow_dataflow.loader import dags_for

globals().update(dags_for(__file__))
