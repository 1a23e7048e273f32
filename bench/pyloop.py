"""The benchmark's Python comparison (bench/bench.lua): one provider's
listing looped page by page as the official SDKs do, with the standard
library only (http.client over one keep-alive connection, json).
Usage: pyloop.py PROVIDER BASE_URL USERS. Prints "rows seconds bytes"."""
import http.client
import json
import sys
import time
import urllib.parse

PIPE = "3fa85f64-5717-4562-b3fc-2c963f66afa6"
KEYS = {"helicone": "sk-helicone-emu", "openlayer": "ol-emu-key",
        "arthur": "arthur-emu-key", "usertour": "ak_emu"}


def main():
    name, base, users = sys.argv[1], sys.argv[2], sys.argv[3]
    u = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(u.hostname, u.port)
    headers = {"Authorization": "Bearer " + KEYS[name], "X-Emu-Users": users,
               "Content-Type": "application/json", "Accept": "application/json"}

    def fetch(method, path, body=None):
        conn.request(method, path, body=body, headers=headers)
        r = conn.getresponse()
        data = r.read()
        if r.status != 200:
            raise RuntimeError("HTTP %d: %s" % (r.status, data[:200]))
        return data

    rows = nbytes = 0
    start = time.perf_counter()
    k = 0
    nxt = "/v1/users?limit=100"
    while True:
        if name == "helicone":
            body = json.dumps({"filter": "all", "limit": 1000, "offset": k * 1000,
                               "sort": {"user_id": "asc"}})
            data = fetch("POST", "/v1/user/metrics/query", body)
            page = json.loads(data)["data"]["users"]
            last = len(page) < 1000
        elif name == "openlayer":
            data = fetch("POST", "/v1/inference-pipelines/%s/users?page=%d&perPage=100" % (PIPE, k + 1), "{}")
            page = json.loads(data)["items"]
            last = len(page) < 100
        elif name == "arthur":
            data = fetch("GET", "/api/v1/traces/users?page=%d&page_size=5000&sort=asc"
                         "&task_ids=task-1&task_ids=task-2&task_ids=task-3" % k)
            doc = json.loads(data)
            page = doc["users"]
            last = len(page) < 5000 or (k + 1) * 5000 >= doc["count"]
        else:
            data = fetch("GET", nxt)
            doc = json.loads(data)
            page = doc["results"]
            nxt = doc["next"]
            last = nxt is None
        rows += len(page)
        nbytes += len(data)
        k += 1
        if last:
            break
    print(rows, time.perf_counter() - start, nbytes)


main()
