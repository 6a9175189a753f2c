"""Reading run folders back: `tunekit runs DIR` (a table) and `tunekit report RUN [RUN ...]` (an HTML page).

$ tunekit runs runs/
$ tunekit report runs/quickstart runs/tiny-sft-lora -o report.html
"""
