from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


def test_openapi_schema_and_docs_are_served(client, alice):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    assert "/api/v1/me/" in schema.json()["paths"]
    assert client.get("/api/docs/").status_code == 200


def test_anonymous_api_call_gets_json_401_with_a_bearer_challenge(api):
    response = api().get("/api/v1/me/")

    assert response.status_code == 401
    assert response.json()["detail"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_unknown_api_path_answers_json_404(api, alice):
    response = api(alice).get("/api/v1/nothing-here/")

    assert response.status_code == 404
    assert "no API endpoint" in response.json()["detail"]


def test_team_member_list_costs_a_fixed_number_of_queries(api, alice, bob, django_assert_num_queries):
    from tests.factories import MembershipFactory

    client = api(alice)
    client.get("/api/v1/teams/demo/members/")
    MembershipFactory.create_batch(5, team=alice.memberships.get().team)
    with django_assert_num_queries(2):
        response = client.get("/api/v1/teams/demo/members/")
    assert len(response.json()) == 7
