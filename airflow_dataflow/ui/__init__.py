"""The Dataflow view of the Airflow UI: a JSON API and one page, served by the plugin's app."""
