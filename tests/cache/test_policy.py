"""Hit policies: tiered thresholds, and the guards that refuse look-alike traps after retrieval."""

from __future__ import annotations

import dataclasses

import pytest

from otel_llmcost.cache import semantic
from otel_llmcost.cache.policy import (
    AntonymGuard,
    Decision,
    EntityGuard,
    Guard,
    GuardedPolicy,
    HitPolicy,
    NegationGuard,
    NumberGuard,
    OrdinalGuard,
    RoleSwapGuard,
    SmallEditGuard,
    SuperlativeGuard,
    ThresholdPolicy,
    TimeScopeGuard,
    default_guards,
    same_words,
)

# guard, trap pairs it must refuse, look-alike pairs it must let through (similarity 0.95: above any threshold)
GUARD_CASES: list[tuple[Guard, list[tuple[str, str]], list[tuple[str, str]]]] = [
    (NegationGuard(),
     [("Which cards are accepted?", "Which cards are not accepted?"),
      ("How do I pin a message?", "How do I unpin a message?"),
      ("Should I water the lawn in August?", "Should I stop watering the lawn in August?")],
     [("Which cards are accepted?", "Which cards do you accept?"),
      ("Why can't I log in?", "Why won't the site let me log in?"),
      ("What's the price for non-members?", "How much is it if I'm not a member?")]),
    (AntonymGuard(),
     [("How do I increase the font size?", "How do I decrease the font size?"),
      ("How do I upload a photo?", "How do I download a photo?"),
      ("Is the pool open on holidays?", "Is the pool closed on holidays?")],
     [("How do I increase the font size?", "How can I make the font size larger?"),
      ("How do I upload a photo?", "How can I add a photo to my profile?")]),
    (NumberGuard(),
     [("Is there a fee for 3 bags?", "Is there a fee for 5 bags?"),
      ("Is the shop open on Monday?", "Is the shop open on Tuesday?"),
      ("Can I transfer £500 today?", "Can I transfer £5,000 today?"),
      ("Set an alarm for 6am", "Set an alarm for 6pm")],
     [("Can I book for two people?", "Can I book for 2 people?"),
      ("Can I return it within 14 days?", "Can I send it back within two weeks?"),
      ("Is the 2-year warranty transferable?", "is the 2 year warranty transferable")]),
    (OrdinalGuard(),
     [("When is the first exam?", "When is the second exam?"),
      ("Is the 1st lesson free?", "Is the last lesson free?")],
     [("When is the first exam?", "When is the 1st exam?"),
      ("Can I change the first name on my ticket?", "My first name is misspelt on my ticket")]),
    (SuperlativeGuard(),
     [("What's your cheapest room?", "What's your largest room?"),
      ("Which plan has the most users?", "Which plan has the fewest users?")],
     [("What's the best way to contact you?", "How do I contact you?"),
      ("What is the fastest way to learn to type?", "What's the quickest way to learn to type?")]),
    (TimeScopeGuard(),
     [("How many orders came in this week?", "How many orders came in this month?"),
      ("What's on the menu today?", "What's on the menu tomorrow?"),
      ("Is the monthly pass refundable?", "Is the annual pass refundable?"),
      ("How much did I spend?", "How much did I spend last month?")],
     [("How many orders came in this week?", "How many orders did we get this week?"),
      ("Do you offer next-day delivery?", "Can I have it delivered tomorrow?"),
      ("Can I pay my rent automatically?", "Can I pay my rent automatically each month?")]),
    (EntityGuard(),
     [("Do you ship to Canada?", "Do you ship to Mexico?"),
      ("How do I install the app on Windows?", "How do I install the app on macOS?")],
     [("Do you ship to Canada?", "do you ship to canada"),
      ("Can I pay with PayPal?", "Do you take PayPal payments?"),
      ("Is VAT included in the price?", "Does the price include tax?")]),
    (RoleSwapGuard(),
     [("Can a coach message a player?", "Can a player message a coach?"),
      ("Copy the files from the laptop to the server", "Copy the files from the server to the laptop"),
      ("Can my neighbour sue me?", "Can I sue my neighbour?")],
     [("How do I claim a refund for a cancelled flight?", "For a cancelled flight, how do I claim a refund?"),
      ("Do you sell tea and coffee?", "Do you sell coffee and tea?"),
      ("Can a coach message a player?", "Is a coach allowed to message a player?")]),
]


def _ids() -> list[str]:
    return [g.name for g, _, _ in GUARD_CASES]


@pytest.mark.parametrize(("guard", "traps", "passes"), GUARD_CASES, ids=_ids())
def test_guard_refuses_its_trap_kind(guard: Guard, traps: list[tuple[str, str]],
                                     passes: list[tuple[str, str]]) -> None:
    """Each guard names a reason for every trap of its kind, in both directions."""
    for a, b in traps:
        assert guard.check(a, b, 0.95), (a, b)
        assert guard.check(b, a, 0.95), (b, a)


@pytest.mark.parametrize(("guard", "traps", "passes"), GUARD_CASES, ids=_ids())
def test_guard_lets_plain_paraphrases_through(guard: Guard, traps: list[tuple[str, str]],
                                              passes: list[tuple[str, str]]) -> None:
    """Each guard finds nothing wrong with look-alike paraphrases of its kind."""
    for a, b in passes:
        assert guard.check(a, b, 0.95) is None, (a, b, guard.check(a, b, 0.95))
        assert guard.check(b, a, 0.95) is None, (b, a)


def test_small_edit_guard_asks_more_similarity_of_one_word_changes() -> None:
    """A one-qualifier change needs the higher similarity; a typo or a reworded paraphrase does not."""
    g = SmallEditGuard(min_similarity=0.92)
    staff, visitors = "What's the parking fee for staff?", "What's the parking fee for visitors?"
    assert g.check(staff, visitors, 0.85) == "small edit below 0.92 similarity"
    assert g.check(staff, visitors, 0.95) is None
    assert g.check("How do I cancel my order?", "How do I cancle my order?", 0.8) is None
    assert g.check("How do I reset my password?",
                   "I forgot my password and need a new one, what should I do?", 0.85) is None


PARAPHRASES = [
    ("How do I reset my password?", "how do i reset my password"),
    ("Can I change my delivery slot?", "Hi, can I change my delivery slot please?"),
    ("Where is my refund?", "where's my refund??"),
    ("How do I cancel my subscription?", "How do I cancel my subscripton?"),
    ("What vegan options do you have on the menu?", "On the menu, what vegan options do you have?"),
    ("How do I book my first appointment?", "how do i book my 1st appointment"),
    ("Do you deliver to Leeds on Saturdays?", "do you deliver to leeds on saturdays"),
]


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_default_guards_pass_near_repeats(a: str, b: str) -> None:
    """Case, punctuation, greetings, typos, fronted phrases and 1st/first pass every default guard."""
    policy = GuardedPolicy(ThresholdPolicy(0.8))
    assert policy.decide(b, a, 0.9) == Decision(True, "high", "above high threshold")


def test_threshold_policy_tiers() -> None:
    """High and medium tiers; medium only when enabled; below both is a miss."""
    tiered = ThresholdPolicy(high=0.9, medium=0.8)
    assert tiered.decide("q", "c", 0.95) == Decision(True, "high", "above high threshold")
    assert tiered.decide("q", "c", 0.9) == Decision(True, "high", "above high threshold")
    assert tiered.decide("q", "c", 0.85) == Decision(True, "medium", "above medium threshold")
    assert tiered.decide("q", "c", 0.7) == Decision(False, None, "below threshold")
    single = ThresholdPolicy(high=0.9)
    assert single.decide("q", "c", 0.85) == Decision(False, None, "below threshold")


def test_threshold_policy_rejects_bad_thresholds() -> None:
    """Thresholds must be cosines, and medium below high."""
    with pytest.raises(ValueError):
        ThresholdPolicy(high=1.5)
    with pytest.raises(ValueError):
        ThresholdPolicy(high=0.8, medium=0.9)


def test_guarded_policy_refuses_traps_above_threshold() -> None:
    """Above the threshold a trap is refused with the guard's reason; a paraphrase is served."""
    policy = GuardedPolicy(ThresholdPolicy(0.8))
    d = policy.decide("Cancel my subscription", "Don't cancel my subscription", 0.93)
    assert d == Decision(False, None, "refused: negation differs")
    d = policy.decide("Is there a fee for 3 bags?", "Is there a fee for 5 bags?", 0.95)
    assert not d.hit and d.tier is None and d.reason.startswith("refused: numbers differ")
    d = policy.decide("Which cards do you accept?", "Which cards are accepted?", 0.9)
    assert d == Decision(True, "high", "above high threshold")
    assert policy.decide("Which cards do you accept?", "What's your address?", 0.3) == Decision(
        False, None, "below threshold")


def test_guarded_policy_near_repeat_rescue() -> None:
    """A misspelt repeat below the threshold is served as a near repeat, still verified by the guards."""
    policy = GuardedPolicy(ThresholdPolicy(0.8))
    typo = ("How do I request a repeat prescription?", "How do I reqest a repeat perscription?")
    assert same_words(*typo)
    assert policy.decide(typo[1], typo[0], 0.55) == Decision(True, "high", "near repeat (same words)")
    assert policy.decide(typo[1], typo[0], 0.3).reason == "below threshold"
    assert GuardedPolicy(ThresholdPolicy(0.8), same_words_min=None).decide(typo[1], typo[0], 0.6).hit is False
    swap = ("Copy the files from the laptop to the server", "copy the files from the server to the laptop")
    assert same_words(*swap)
    assert policy.decide(*swap, 0.6).reason.startswith("refused: roles swapped")
    assert policy.decide("How do I turn on alerts?", "how do i turn off alerts", 0.6).reason.startswith(
        "refused: antonyms")
    assert policy.decide("Track parcel 48213", "Track parcel 48231", 0.6).reason == "below threshold"
    assert not same_words("What's the capital of Australia?", "What's the capital of Austria?")


def test_guarded_policy_tiers_and_guards_on() -> None:
    """Medium hits keep their tier and are verified unless guards_on leaves them out."""
    base = ThresholdPolicy(high=0.9, medium=0.8)
    trap = ("How do I enable backups?", "How do I disable backups?")
    para = ("How do I enable backups?", "I'd like my backups switched on, what should I do?")
    policy = GuardedPolicy(base)
    assert policy.decide(*para, 0.85) == Decision(True, "medium", "above medium threshold")
    assert policy.decide(*trap, 0.85).reason.startswith("refused: antonyms")
    high_only = GuardedPolicy(base, guards_on=("high",))
    assert high_only.decide(*trap, 0.85) == Decision(True, "medium", "above medium threshold")
    assert high_only.decide(*trap, 0.95).hit is False


def test_guarded_policy_with_custom_guards() -> None:
    """Any object with a name and check() is a guard; no guards means the base policy alone."""

    class NoRefunds:
        name = "no_refunds"

        def check(self, query: str, candidate: str, similarity: float) -> str | None:
            return "refund questions go to a person" if "refund" in query.lower() else None

    policy = GuardedPolicy(ThresholdPolicy(0.8), guards=[NoRefunds()])
    assert isinstance(NoRefunds(), Guard)
    assert policy.decide("Where is my refund?", "Where's my refund?", 0.95).reason == (
        "refused: refund questions go to a person")
    bare = GuardedPolicy(ThresholdPolicy(0.8), guards=[])
    assert bare.decide("Cancel my plan", "Don't cancel my plan", 0.95).hit is True
    assert [g.name for g in default_guards()] == [
        "negation", "antonym", "number", "ordinal", "superlative", "time_scope", "entity", "role_swap",
        "small_edit"]


def test_policies_fit_the_semantic_cache_protocols() -> None:
    """Both policies satisfy the cache's HitPolicy; Decision is a frozen dataclass with hit, tier, reason."""
    for policy in (ThresholdPolicy(), GuardedPolicy()):
        assert isinstance(policy, HitPolicy)
        assert isinstance(policy, semantic.HitPolicy)
    d = Decision(True, "high", "above high threshold")
    assert [f.name for f in dataclasses.fields(d)] == ["hit", "tier", "reason"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.hit = False  # type: ignore[misc]
