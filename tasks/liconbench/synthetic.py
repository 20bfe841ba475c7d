"""The authored synthetic extreme-label set: 24 home-assistant intents, 5 train + 3 test each.

Why it exists: the real LongICLBench datasets are either on the hub (GoEmotions, Discovery),
behind a path (BANKING77, Few-NERD) or not redistributable (TacRED, DialogRE), so the offline
default run and the end-to-end tests need a set this project wrote itself. It is small on
purpose (one round = 24 short demonstrations, a few hundred tokens) so rounds 1-2 on a 135M
model finish in seconds, yet it has enough labels that the prompt grows the way the real
benchmark's does.

Every text is a request phrase written here, put into one of two sentence frames; nothing is
random, so `python -m evalharness.tasks.liconbench.synthetic` rewrites `data/synthetic.jsonl`
byte for byte (a test checks the file and this script agree).
"""

from __future__ import annotations

import json
from pathlib import Path

DATA_FILE = Path(__file__).resolve().parent / "data" / "synthetic.jsonl"

#: Sentence frames; frame 0 makes train items 1-4, frame 1 makes train item 5 and the 3 tests.
FRAMES = ("Please {}.", "Could you {} now?")
TRAIN_PER_LABEL = 5

#: label -> four request phrases (authored for this project).
PHRASES: dict[str, tuple[str, str, str, str]] = {
    "lights_on": (
        "turn on the kitchen lights",
        "switch the hallway lamp on",
        "light up the living room",
        "put the bedroom lights on",
    ),
    "lights_off": (
        "turn off the kitchen lights",
        "switch the porch lamp off",
        "make the living room dark",
        "shut off every light upstairs",
    ),
    "set_alarm": (
        "wake me up at six tomorrow",
        "set an alarm for seven thirty",
        "ring an alarm at noon",
        "add a morning alarm for Monday",
    ),
    "cancel_alarm": (
        "cancel my six o'clock alarm",
        "delete the alarm for tomorrow",
        "remove every alarm I set",
        "turn off the Monday wake-up alarm",
    ),
    "play_music": (
        "play some jazz in the kitchen",
        "start my running playlist",
        "put on the latest album by my favourite band",
        "play relaxing piano music",
    ),
    "stop_music": (
        "stop the music",
        "end the song that is playing",
        "silence the playlist in the kitchen",
        "halt the album",
    ),
    "volume_up": (
        "make the speaker louder",
        "raise the volume a bit",
        "turn the sound up",
        "increase the volume to eight",
    ),
    "volume_down": (
        "make the speaker quieter",
        "lower the volume a little",
        "turn the sound down",
        "reduce the volume to two",
    ),
    "weather_forecast": (
        "tell me if it will rain today",
        "give me the forecast for the weekend",
        "check how warm it will be tomorrow",
        "say whether I need an umbrella this afternoon",
    ),
    "set_timer": (
        "start a ten minute timer",
        "time my tea for four minutes",
        "count down twenty minutes for the oven",
        "set a timer for half an hour",
    ),
    "add_to_shopping_list": (
        "put milk on my shopping list",
        "add eggs and bread to the grocery list",
        "note that we need coffee",
        "add dish soap to the shopping list",
    ),
    "read_shopping_list": (
        "read me my shopping list",
        "tell me what is on the grocery list",
        "list everything I still need to buy",
        "go through the shopping list with me",
    ),
    "call_contact": (
        "call my sister",
        "phone the dentist",
        "ring Grandma on speaker",
        "dial my office number",
    ),
    "send_message": (
        "text my brother that I am running late",
        "send Anna a message saying thanks",
        "message the team that the meeting moved",
        "write to Dad that dinner is ready",
    ),
    "book_taxi": (
        "get me a cab to the airport",
        "order a taxi for eight tonight",
        "book a ride to the train station",
        "send a car to pick me up at home",
    ),
    "book_restaurant": (
        "reserve a table for two at seven",
        "book dinner at the Italian place on Friday",
        "get us a restaurant reservation for four people",
        "find a table for lunch tomorrow",
    ),
    "translate_phrase": (
        "translate good morning into Spanish",
        "say thank you in Japanese",
        "tell me how to ask for the bill in French",
        "translate where is the station into German",
    ),
    "convert_currency": (
        "convert fifty dollars to euros",
        "tell me how many yen one pound buys",
        "change a hundred euros into dollars",
        "work out twenty francs in pounds",
    ),
    "check_calendar": (
        "tell me what is on my calendar today",
        "check whether I am free on Thursday",
        "read my appointments for tomorrow",
        "show my schedule for next week",
    ),
    "add_calendar_event": (
        "put a dentist appointment on my calendar for Tuesday",
        "schedule a call with Sam at three",
        "add the school play to Friday evening",
        "create a meeting with the landlord next Monday",
    ),
    "set_thermostat": (
        "set the heating to twenty degrees",
        "make the house a bit warmer",
        "cool the bedroom down to eighteen",
        "turn the thermostat up two degrees",
    ),
    "lock_door": (
        "lock the front door",
        "make sure the back door is locked",
        "lock up the garage",
        "secure every door in the house",
    ),
    "find_recipe": (
        "find me a recipe for pancakes",
        "look up how to make lentil soup",
        "suggest a quick dinner with chicken and rice",
        "search for a vegan chocolate cake recipe",
    ),
    "tell_joke": (
        "tell me a joke",
        "say something funny",
        "make me laugh with a pun",
        "tell a joke about cats",
    ),
}


def build_rows() -> list[dict[str, str]]:
    """All rows in file order: every label's train items, then every label's test items.

    Label order is `PHRASES` order, so round-robin selection (first-appearance order) visits
    labels in the order they are written above.
    """
    train, test = [], []
    for label, phrases in PHRASES.items():
        texts = [FRAMES[0].format(p) for p in phrases] + [FRAMES[1].format(p) for p in phrases]
        texts = [t[0].upper() + t[1:] for t in texts]
        train += [{"split": "train", "text": t, "label": label} for t in texts[:TRAIN_PER_LABEL]]
        test += [{"split": "test", "text": t, "label": label} for t in texts[TRAIN_PER_LABEL:]]
    return train + test


def render() -> str:
    """The exact file contents (JSONL, one row per line, keys in a fixed order)."""
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in build_rows())


if __name__ == "__main__":
    DATA_FILE.parent.mkdir(parents=True, exist_ok=True)
    DATA_FILE.write_text(render(), encoding="utf-8")
    print(f"wrote {DATA_FILE} ({len(build_rows())} rows, {len(PHRASES)} labels)")
