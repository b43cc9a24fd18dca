"""The Redis key scheme is ready for Redis Cluster: keys a script or pipeline uses together
share one hash slot, whatever tenant, run or key ids clients choose; deployments sharing a
Redis are kept apart by their prefix."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from adapters.redis.client import RedisStore

ids = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=40)


class NoClient:
    def register_script(self, source: str) -> None:
        return None


@given(
    st.sampled_from(["t:", "a:", "c:", "r:", "i:"]),
    ids,
    st.lists(st.lists(ids, min_size=1, max_size=3), min_size=2, max_size=4),
    st.sampled_from(["sba:", "prod:eu:", ""]),
)
def test_every_key_of_one_partition_lands_in_one_slot(kind, ident, parts, prefix) -> None:
    store = RedisStore(NoClient(), prefix=prefix)
    keys = [store.key(kind + ident, *p) for p in parts]
    assert len({key_slot(k.encode()) for k in keys}) == 1


def test_prefixes_keep_deployments_apart() -> None:
    a, b = RedisStore(NoClient(), prefix="eu:"), RedisStore(NoClient(), prefix="us:")
    assert a.key("t:1", "rl", "runs") != b.key("t:1", "rl", "runs")
    assert a.key("t:1", "rl", "runs").startswith("eu:{t:1}:")


@pytest.mark.parametrize("prefix", ["a{b", "x}", "{}"])
def test_a_prefix_with_braces_is_refused(prefix) -> None:
    with pytest.raises(ValueError, match="braces"):
        RedisStore(NoClient(), prefix=prefix)
