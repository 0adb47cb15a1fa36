"""An example airflow-dataflow plugin: the ``counter`` connector and ``jsonl_batches`` destination."""
