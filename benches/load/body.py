#!/usr/bin/env python3
"""Writes a valid popup.converted body of exactly SIZE bytes (default 1024):
the spec's example with more visitor.fields entries, padded by an unknown
field. The same shape as benches/pipeline.rs's bodies.

  body.py OUT_FILE [SIZE]
"""
import sys
import time

size = int(sys.argv[2]) if len(sys.argv) > 2 else 1024
head = ('{"event":"popup.converted","campaign_id":"camp_abc123","campaign_name":"Summer Sale Popup",'
        f'"timestamp":"{time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}","visitor":{{"email":"jane@example.com",'
        '"fields":{"name":"Jane Smith","email":"jane@example.com"')
tail = '}},"page_url":"https://yoursite.com/products/summer-sale"'
fields, i = "", 0
while True:
    entry = f',"field_{i}":"answer number {i} to question {i}"'
    if len(head) + len(fields) + len(entry) + len(tail) + 11 > size:
        break
    fields += entry
    i += 1
pad = size - (len(head) + len(fields) + len(tail) + 1) - 10
body = f'{head}{fields}{tail},"note":"{"x" * pad}"}}'
assert len(body) == size, len(body)
with open(sys.argv[1], "w") as f:
    f.write(body)
