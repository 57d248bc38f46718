"""Thread safety: several Python threads draft (single and batched, sharing sessions) while one
thread keeps adding to the shared ModelStore; nothing fails, every tree is well formed, and the
additions are visible afterwards."""

from __future__ import annotations

import random
import threading

import numpy as np

import hierdraft


def phrases(rng: random.Random, n: int) -> list[list[int]]:
    book = [[rng.randrange(500) for _ in range(rng.randint(2, 8))] for _ in range(40)]
    out = []
    for _ in range(n):
        seq: list[int] = []
        while len(seq) < 60:
            seq += rng.choice(book)
        out.append(seq)
    return out


def well_formed(tree: hierdraft.DraftTree, budget: int) -> bool:
    parents = tree.parents
    n = len(tree)
    return (
        n <= budget
        and all(-1 <= parents[i] < i for i in range(n))
        and tree.ancestor_mask().shape == (n, n)
    )


def test_drafting_while_adding() -> None:
    rng = random.Random(0)
    model = hierdraft.ModelStore.build(phrases(rng, 50), vocab_size=1000)
    corpus = hierdraft.CorpusIndex.build(phrases(rng, 200), vocab_size=1000)
    drafter = hierdraft.HierarchicalDrafter(model, corpus, budget=24)
    shared = [drafter.start(s[:20]) for s in phrases(rng, 4)]
    errors: list[BaseException] = []
    stop = threading.Event()
    proposals = [0]
    lock = threading.Lock()
    online = [[900 + i % 50, 901, 902, 903, 904 + i % 3] for i in range(300)]
    # Every thread starts its loop at the same moment, and each reader finishes at least one
    # round, however fast the writer is (it may add everything before a reader's first round
    # ends; the readers then still draft, against the grown store).
    start = threading.Barrier(5, timeout=60)

    def writer() -> None:
        try:
            start.wait()
            for seq in online:
                model.add(np.array(seq, dtype=np.uint32))
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)
        finally:
            stop.set()

    def reader(seed: int) -> None:
        r = random.Random(seed)
        try:
            start.wait()
            first = True
            while first or not stop.is_set():
                first = False
                prompt = r.choice(phrases(r, 1))[:30]
                session = drafter.start(prompt)
                for _ in range(10):
                    tree = session.propose()
                    assert well_formed(tree, 24)
                    session.accept(tree.tokens[:2].tolist() + [r.randrange(500)])
                batch = drafter.propose_batch([session, *shared, shared[seed % 4]])
                assert all(well_formed(t, 24) for t in batch)
                shared[seed % 4].accept([r.randrange(500)])  # sessions shared across threads
                session.finish(learn=seed % 2 == 0)
                with lock:
                    proposals[0] += 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(i,)) for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert proposals[0] >= 4  # every reader finished a round
    found = model.lookup([949, 901, 902], k=4, max_len=4)
    assert {tuple(a.tolist()) for a, _ in found} == {(903, 904), (903, 905), (903, 906)}


def test_context_store_shared_between_threads() -> None:
    store = hierdraft.ContextStore()
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        r = random.Random(seed)
        try:
            for _ in range(300):
                store.extend([r.randrange(20) for _ in range(5)])
                for tokens, score in store.lookup(k=4, max_len=6):
                    assert 1 <= len(tokens) <= 6 and 0 < score <= 1
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert len(store) == 4 * 300 * 5
