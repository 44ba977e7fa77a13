"""``equihome-sim report``: one self-contained HTML file from a result (docs/report.md).

``sources`` reads a result (a ``simulate --json`` file, a result in protobuf JSON, or a run on a server)
as a contract message; ``kinds`` maps each kind of result to its view and writes the file; a view
(``simulation_view``) builds a ``page.Report`` of sections, charts (``charts``) and tables in the units
of ``units``, labelled by ``catalogue`` and headed by the ``headline`` figures; ``page`` renders it. This
package imports nothing heavy itself, so ``headline`` serves the terminal without loading Plotly.
"""
