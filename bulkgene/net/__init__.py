"""Talking to the server: one HTTP attempt, the retry policy, the pacer, the batch client.

One batch, from the pipeline down to the socket (each layer one module):

    client.py     GeneClient.fetch_batch: pack the batch into requests, fetch the parts at
                  once (gather.py: one failure comes out, never an ExceptionGroup)
    refusals.py   find the GeneIDs a server refuses (adaptive group testing)
    probe.py      vouch for the endpoint with a GeneID it must know; switch a retired one
    chain.py      the page chain of one request (or its one TSV answer)
    exchange.py   one request until it yields a usable answer: send, judge, retry
    health.py     whether the run goes on (a host that never answers, an outage)
    attempt.py    one HTTP attempt; aiohttp's exceptions become failures.py's, here only

Which exception crosses which layer (anything else stays inside its module):

    exception                    raised by              caught by
    AttemptFailed and kin        attempt (Transport)    exchange (retried, or Health stops
      (failures.py)                                     the run), doctor (a row)
    InvalidPage (ncbi/pages.py)  a read callback        exchange: the page is fetched again
    BrokenChain (ncbi/pages.py)  BatchAnswer.add        chain: the chain starts again
    Refused (exchange.py)        exchange               refusals (search, probe), probe,
                                                        chain (a next page: start again)
    GaveUp (exchange.py)         exchange, chain,       client: the batch failed
                                 refusals
    FatalHTTPError, AuthError,   exchange, health,      the pipeline: the run stops
      OutageError (errors.py)    probe, refusals

A read callback never leaves the retry loop by raising: it returns what it found, and only
an InvalidPage (fetch the page again) goes back into the loop. A task group's ExceptionGroup
never leaves gather.py: the fatal error in it first, else the GaveUp.
"""
