"""A translation backend registered by a plugin: a fixed phrase book (unknown text comes back unchanged)."""
from alignkit import hookimpl
from alignkit.datagen import TranslatorSpec

PHRASES = {
    "How do I cook rice?": "Wie koche ich Reis?",
    "Simmer it in twice its volume of water.": "Koche ihn in der doppelten Menge Wasser.",
    "Why is the sky blue?": "Warum ist der Himmel blau?",
    "Air scatters blue light more than red light.": "Die Luft streut blaues Licht stärker als rotes Licht.",
    "Name a prime number.": "Nenne eine Primzahl.",
}
BOOK = {("en", "de"): PHRASES, ("de", "en"): {v: k for k, v in PHRASES.items()}}


class PhraseBook:
    calls: list = []

    def translate(self, texts, source, target):
        PhraseBook.calls.append((source, target, len(texts)))
        return [BOOK[(source, target)].get(t, t) for t in texts]


@hookimpl
def alignkit_register_translators():
    return [TranslatorSpec("phrasebook", lambda cfg, step, policy: PhraseBook(), "a fixed phrase book")]
