"""Invoice pipeline: ERP extract in, validated, rendered, delivered and archived invoices out.

Stages, in data-flow order: ``ingest.load_extract`` -> ``validate.validate`` ->
``documents.build_documents`` -> ``batching.plan_batches`` -> ``delivery.render_batch`` /
``delivery.deliver_batch`` (render, channels, archive, ledger) -> ``report.summarize``.
``flows/billing_run.py`` wires them with Prefect; nothing here imports Prefect.
"""
