"""The audience catalog on a real Redis: concurrent changes both land with versions of their own,
and a catalog that went back (deleted, restored from an older copy) stops the service instead of
publishing every member's leave, while a new add numbers on from the newest version recorded."""

from __future__ import annotations

import threading

import pytest

from features import keys
from stream.service.audience_catalog import AudienceCatalog, CatalogError
from stream.settings import Settings
from tests.stream.service.test_segments_e2e import client_for

pytestmark = pytest.mark.integration


def catalog_for(settings: Settings) -> AudienceCatalog:
    return AudienceCatalog(client_for(settings), settings.key_prefix, refresh_interval_s=0.0)


def test_changes_made_at_once_all_land_each_with_its_own_version(settings: Settings) -> None:
    names = [f"a{i}" for i in range(8)]
    threads = [
        threading.Thread(
            target=lambda n=n: catalog_for(settings).change(
                lambda c: c.adding(n, "events_total > 1")
            )
        )
        for n in names
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stored = catalog_for(settings).load()
    assert stored.version == len(names)
    assert sorted(a.name for a in stored.audiences) == names
    assert sorted(a.version for a in stored.audiences) == list(range(1, len(names) + 1))


def test_a_catalog_that_went_back_stops_the_service_and_adding_numbers_on(
    settings: Settings,
) -> None:
    client = client_for(settings)
    admin = catalog_for(settings)
    admin.change(lambda c: c.adding("big", "spend_total > 100"))
    admin.change(lambda c: c.adding("small", "spend_total < 10"))
    service = catalog_for(settings)
    assert service.refresh() == admin.load()
    # A partition's owner recorded its backfill up to v2; then the catalog key is lost.
    client.hset(keys.audience_backfill(settings.key_prefix), "0", b'{"version":2,"done":true}')
    client.delete(keys.audiences(settings.key_prefix))
    with pytest.raises(CatalogError, match="v0, older than v2"):
        service.refresh()
    with pytest.raises(CatalogError, match="older than v2"):
        catalog_for(settings).refresh()  # a restarted instance too
    again = admin.change(lambda c: c.adding("big", "spend_total > 100"))
    assert again.version == 3
    assert catalog_for(settings).refresh() == again


def test_an_unreadable_catalog_is_named_with_the_way_forward(settings: Settings) -> None:
    client_for(settings).set(keys.audiences(settings.key_prefix), b"{not json")
    with pytest.raises(CatalogError, match="fix or delete the key"):
        catalog_for(settings).load()
