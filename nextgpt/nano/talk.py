"""How people talk to NExT-GPT nano: a broad grammar of requests and questions, conversations, honest answers outside
the world, and uploads as people make them. It adds to a world written by `nextgpt.nano.world`.

    python -m nextgpt.nano.talk data/nano-world-8k --seed 0

What it adds
------------
* **Language.** Requests, questions and cross-modal asks are built from parts (filler and politeness, a verb frame,
  an object phrase whose attribute words come in many forms and orders), then roughened (lower case, no final
  punctuation, small typos). Every table has a `train` and a `held_out` side: the held-out verb frames, object
  orders and attribute phrases appear only in the `heldout` test dialogues, so that split measures phrasings (whole
  templates and their combinations) the model never trained on. Answers keep one plain style and always name what
  they make before the item ("Here is a red star on the left:"), so the text and the media agree.
* **Conversation.** Dialogues of 1-6 turns mixing new requests for another medium, questions about what the model
  just made (answered in text, no media), edits of an earlier item by reference ("the first one", "the video",
  "that sound"), two media in one answer, corrections ("no, I meant a square"), uploads, and new topics.
* **Honesty.** Requests outside the world (other objects, colours or shapes, several objects, general knowledge,
  chit-chat, "who are you?") get a short text that says what the model can do (it always contains
  `CAPABILITY_MARK`), and no media; so do small talk ("what can you do?", "thanks") and questions about an attached
  item when nothing is attached. Requests for another object, colour or shape are the world's own requests with that
  one word swapped (`outside_request`): only the words, never the frame, tell nano it cannot make them. Uploads
  that are not from the world (photo-like textures, noise, scenes with several shapes; noise, babble, chords and
  melodies; such videos) get a text saying so (`UPLOAD_MARK`).
* **Follow-ups.** Requests that leave out the position, motion or rhythm get the default (`DEFAULTS`), named in the
  answer; conversations mix in greetings, thanks and questions to the model about what it made ("what colour did
  you use?"); uploads are asked about in more ways (`MORE_QUESTIONS`, whose held-out side is `QUESTIONS`'s);
  general-knowledge questions, some in the world's own words ("what colour is the sky?"), get "I don't know" and
  what nano can do.
* **Plain talk** (stage 7). Requests as first typed, in the same short frames for what nano
  can and cannot make (`SHORT_FRAMES`); items of the conversation taken into another medium by reference (`REFER`);
  plainer edits and edits nano cannot make; any question about any upload; general knowledge from templates.
* **Questions asked indirectly** (stage 10). "do you know which way it goes?", "i'd like its colour", "could you tell
  me what shape you drew?": a wrapper and a clause or noun phrase (`WRAPPERS`, `CLAUSES`, `OWN_CLAUSES`), about an
  upload or about what the model made.
* **Broad wording** (stage 11). The trained phrases recombined in new orders ("a clip of a star sliding over to the
  left, in red"), short requests for two media ("draw a red star and play its note") and questions asking the model
  to describe what it made; nothing drawn holds a held-out phrase (`held_out_text`).
* **Recall** (stage 12). Conversations that keep coming back to earlier items: edits, questions ("what colour was
  the first picture?") and items taken into another medium, about the latest item or an earlier one, which is then
  always named (`_Talk.exact`); and questions asking the model to describe what it just made, in the words of its
  medium too ("what did you draw?").
* **Revisit** (stage 13). The recall task longer, and mostly about items other than the latest.
* **Late uploads** (stage 14). An upload, the world's or one from outside it, after one to three turns of any kind,
  as a presenter uploads what their phone made in the middle of a chat.
* **Uploads as people make them.** World items rendered at other sizes and aspects, on white, grey or tinted
  backgrounds, off-centre, as PNG or JPEG; sounds at other sample rates, mono or stereo, pure sines or richer
  timbres, other loudness, lengths and beep rates; videos at other sizes, frame rates and lengths.

Files: `{split}/talk.json` (dialogues in the world's schema; each `*_list` entry also carries its item's
`attributes`, and each gpt turn a `kind`: media / answer / capability / upload, plus `asks` for answers), media under
the world's `images/`, `videos/`, `audios/` named `talk_*`. Generated items that the conversation refers back to are
the world's own pair items of the same attributes (the decoders' outputs look like them). Test dialogues are in two
phrasing splits, `"phrasing": "in"` and `"held_out"`.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import re
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..config import MODALITIES
from . import world as W

CAPABILITY_MARK = "I only know"
UPLOAD_MARK = "not from my world"
CAPABILITIES = ("I only know single shapes: circles, squares, triangles and stars, in red, yellow, green, cyan, "
                "blue or purple. I can draw one on the left, in the centre or on the right, animate it moving left, "
                "right, up or down, play the note of its colour as a steady or beeping tone, and describe such "
                "pictures, videos and sounds.")

# --- grammar ---------------------------------------------------------------------------------------------------
# Each table is {"train": (...), "held_out": (...)}; the in-distribution side draws from train only.

SHAPE_WORDS = {"circle": ("circle", "circle", "circle", "disc", "dot", "round shape", "ball", "disk", "circle shape"),
               "square": ("square", "square", "square", "box", "block", "square shape", "tile"),
               "triangle": ("triangle", "triangle", "triangle shape", "triangular shape"),
               "star": ("star", "star", "star shape", "five-pointed star")}
# Colour words people use besides the world's own; the answers always use the world's word.
COLOUR_WORDS = {c: (c, c, c) for c in W.COLOURS} | {"purple": ("purple", "purple", "violet"),
                                                  "cyan": ("cyan", "cyan", "aqua")}
POSITION_WORDS = {
    "left": {"train": ("on the left", "at the left", "on the left side", "on the left-hand side", "in the left third",
                       "to the left", "left side", "over on the left", "in the left part", "at the left edge"),
             "held_out": ("on the left of the frame", "towards the left", "at the left of the picture")},
    "centre": {"train": ("in the centre", "in the center", "in the middle", "centred", "centered", "at the centre",
                         "in the middle of the frame", "in the central third", "at the center", "in the very centre",
                         "dead in the middle"),
               "held_out": ("in the very middle", "at the centre of the picture", "dead centre")},
    "right": {"train": ("on the right", "at the right", "on the right side", "on the right-hand side",
                        "in the right third", "to the right", "right side", "over on the right", "in the right part",
                        "at the right edge"),
              "held_out": ("on the right of the frame", "towards the right", "at the right of the picture")},
}
MOVE_WORDS = {
    "left": {"train": ("moving left", "moving to the left", "going left", "heading left", "sliding left",
                       "travelling leftwards", "drifting left", "moving leftwards", "from right to left",
                       "that moves left", "that goes to the left", "gliding left", "that travels left", "floating left",
                       "shifting left", "rolling left"),
             "held_out": ("heading to the left", "gliding towards the left", "travelling over to the left")},
    "right": {"train": ("moving right", "moving to the right", "going right", "heading right", "sliding right",
                        "travelling rightwards", "drifting right", "moving rightwards", "from left to right",
                        "that moves right", "that goes to the right", "gliding right", "that travels right",
                        "floating right", "shifting right", "rolling right"),
              "held_out": ("heading to the right", "gliding towards the right", "travelling over to the right")},
    "up": {"train": ("moving up", "moving upwards", "going up", "rising", "floating up", "climbing", "heading up",
                     "from bottom to top", "that rises", "that moves up", "flying up", "gliding up", "that goes up",
                     "ascending", "soaring", "that travels up", "floating towards the top"),
           "held_out": ("drifting upwards", "gliding upwards", "travelling up to the top")},
    "down": {"train": ("moving down", "moving downwards", "going down", "falling", "sinking", "dropping",
                       "descending", "from top to bottom", "that falls", "that moves down", "heading down",
                       "gliding down", "that goes down", "plunging", "that travels down", "sinking towards the bottom"),
             "held_out": ("drifting downwards", "gliding downwards", "travelling down to the bottom")},
}
RHYTHM_ADJ = {"steady": {"train": ("steady", "continuous", "constant", "sustained", "long", "unbroken", "smooth",
                                   "even", "uninterrupted", "flat", "stable", "non-stop", "held", "solid"),
                         "held_out": ("long and steady", "smooth, constant")},
              "beeping": {"train": ("beeping", "pulsing", "intermittent", "pulsed", "staccato", "choppy", "repeating",
                                    "stuttering", "pulsating", "blinking", "bleeping", "broken", "on-off", "rhythmic"),
                          "held_out": ("short and choppy", "pulsing, intermittent")}}
RHYTHM_ADV = {"steady": {"train": ("held steadily", "without breaks", "continuously", "steadily", "as one long tone",
                                   "constantly", "without stopping", "held without a break", "nice and steady", "with no gaps",
                                   "evenly", "without a pause"),
                         "held_out": ("steadily without stopping", "as one constant note")},
              "beeping": {"train": ("on and off", "in short beeps", "as beeps", "in pulses", "intermittently",
                                    "beeping", "pulsing", "as a series of beeps", "in little pulses", "in bursts", "with gaps",
                                    "stop and start"),
                          "held_out": ("in short pulses", "as little beeps on and off")}}
MEDIUM_NOUNS = {"image": {"train": ("picture", "image", "drawing", "painting", "sketch", "illustration", "pic",
                                    "artwork", "still image", "photo", "graphic", "art"),
                          "held_out": ("still picture", "painted picture")},
                "video": {"train": ("video", "clip", "animation", "movie", "footage", "short video", "gif",
                                    "short film", "video clip", "film", "cartoon", "animated clip"),
                          "held_out": ("film clip", "animated video")},
                "audio": {"train": ("sound", "tone", "note", "beep", "audio", "sound clip", "hum", "noise",
                                    "audio clip", "chime", "pitch", "buzz"),
                          "held_out": ("audio tone", "note sound")}}
# The plainest forms come first and repeat in the object and frame tables below: most people type them.
# Object phrases. {a} article, {c} colour, {s} shape word, {pos} position, {dir} motion, {r} rhythm adjective,
# {rr} rhythm adverb.
OBJECTS = {
    "image": {"train": ("{a} {c} {s} {pos}", "{a} {c} {s} {pos}", "{a} {c} {s} {pos}", "{a} {s} in {c} {pos}",
                        "{a} {c} {s}, {pos}", "{a} {s} coloured {c} {pos}",
                        "{pos}, {a} {c} {s}", "{a} {c}-coloured {s} {pos}", "{a} {s} that is {c}, {pos}",
                        "{a} {c} {s} placed {pos}", "{a} {s} colored {c} {pos}"),
              "held_out": ("{a} {s}, {c}, {pos}", "{a} {s} {pos}, coloured {c}", "{a} {c} {s} sitting {pos}")},
    "video": {"train": ("{a} {c} {s} {dir}", "{a} {c} {s} {dir}", "{a} {c} {s} {dir}", "{a} {s} in {c} {dir}",
                        "{a} {c} {s}, {dir}", "{a} {s} coloured {c} {dir}",
                        "{a} {c} {s} that keeps {dir}", "{a} {c}-coloured {s} {dir}", "{a} {s} that is {c}, {dir}"),
              "held_out": ("{a} {s}, {c}, {dir}", "{a} {s} {dir}, coloured {c}")},
    "audio": {"train": ("{a} {r} {c} tone", "{a} {r} {c} tone", "{a} {r} tone of {c}", "the {c} note, {rr}",
                        "the note of {c} {rr}",
                        "the sound of {c}, {rr}", "{a} {c} note that is {r}", "{a} {r} sound at the pitch of {c}",
                        "the tone of {c} {rr}", "{a} {r} {c} note", "{c}'s note, {rr}", "the {c} tone, {r}"),
              "held_out": ("{a} {c} tone, {r}", "the pitch of {c} {rr}", "{a} {r} note of {c}")},
}
# Verb frames: {o} the object phrase, {n} a medium noun with its article ("a picture").
FRAMES = {
    "image": {"train": ("draw {o}", "draw {o}", "draw {o}", "sketch {o}", "paint {o}", "show me {o}", "make {n} of {o}",
                        "create {n} of {o}",
                        "generate {n} of {o}", "render {o}", "give me {n} of {o}", "i want to see {o}",
                        "can i see {o}", "illustrate {o}", "picture this: {o}", "{n} of {o}", "i'd like {n} of {o}",
                        "draw me {o}", "i need {n} of {o}", "make {o}", "produce {n} with {o}", "show {o}",
                        "get me {n} of {o}", "{n} showing {o}"),
              "held_out": ("let me see {o}", "i'd love {n} showing {o}", "could i get {n} with {o}",
                           "put {o} in {n}")},
    "video": {"train": ("make {n} of {o}", "make {n} of {o}", "animate {o}", "animate {o}", "show me {n} of {o}",
                        "create {n} of {o}", "film {o}",
                        "generate {n} of {o}", "render {n} of {o}", "i want {n} of {o}", "{n} of {o}",
                        "show me {o}", "i'd like to watch {o}", "record {o}", "make {o}", "give me {n} of {o}",
                        "i need {n} of {o}", "get me {n} of {o}", "{n} showing {o}"),
              "held_out": ("let me watch {o}", "could i get {n} showing {o}", "put {o} in {n}")},
    "audio": {"train": ("play {o}", "play {o}", "play {o}", "let me hear {o}", "sound {o}", "hum {o}", "give me {o}",
                        "i want to hear {o}",
                        "can i hear {o}", "make {o}", "generate {o}", "create {o}", "produce {o}",
                        "make {n}: {o}", "i'd like {n}: {o}", "play me {o}", "get me {o}"),
              "held_out": ("i'd love to hear {o}", "could i get {o}", "let's hear {o}")},
}
PREFIXES = ("", "", "", "please ", "can you ", "could you ", "would you ", "hey, ", "hi! ", "ok, ", "now ",
            "i'd like you to ", "go ahead and ", "hello, please ", "please could you ")
SUFFIXES = ("", "", ".", ".", "!", "?", " please", " for me", ", thanks", " please.", " thank you!")
SHORT_ENDS = ("", "", ".", "!", "?")  # how a short request ends
# Attribute questions about an item. {n}: its medium noun with "this"/"the"; answers name only what was asked.
QUESTIONS = {
    "colour": {"train": ("what colour is it", "what color is the shape", "which colour is {n}", "tell me the colour",
                         "name the colour", "what colour do you see", "what's the colour of the shape",
                         "which colour is the shape in {n}", "what color is it"),
               "held_out": ("can you tell me its colour", "which color does {n} show")},
    "colour_audio": {"train": ("which colour's note is this", "what colour is this sound",
                               "which colour does {n} belong to", "what colour does it sound like",
                               "whose note is this", "which colour is this tone", "what color is this note"),
                     "held_out": ("can you tell me the colour of {n}", "which colour would {n} be")},
    "shape": {"train": ("what shape is it", "which shape do you see", "name the shape", "what's the shape",
                        "what kind of shape is in {n}", "tell me the shape", "what shape is in {n}",
                        "which shape is it", "what is this shape called"),
              "held_out": ("can you name the shape you see", "what is the shape in {n} called")},
    "position": {"train": ("where is it", "where is the shape", "which side is it on", "where's the shape",
                           "where in the frame is it", "tell me where the shape is", "is it on the left or the right",
                           "where is the shape in {n}", "where does the shape sit"),
                 "held_out": ("on which side is the shape", "can you tell me where it sits")},
    "direction": {"train": ("which way does it move", "where is it going", "which direction does it go",
                            "how does the shape move", "what direction is it moving", "where does the shape go",
                            "tell me the direction", "which way is the shape moving in {n}", "which way does it head",
                            "where does the shape travel"),
                  "held_out": ("in which direction does it travel", "can you tell me where it heads")},
    "rhythm": {"train": ("is it steady or beeping", "does it beep", "is the tone continuous or pulsing",
                         "what's the rhythm", "is it pulsing", "is {n} steady", "how does the tone go",
                         "is it on and off or held"),
               "held_out": ("does {n} beep or hold", "what rhythm does {n} have")},
    "describe": {"train": ("what is this", "describe it", "what do you see", "tell me about this", "what's in {n}",
                           "describe {n}", "what is in {n}", "what does {n} show", "explain {n}", "what's this",
                           "write a short description of {n}"),
                 "held_out": ("can you tell me what {n} is", "give me a description of {n}")},
    "describe_audio": {"train": ("what is this sound", "describe it", "what do you hear", "tell me about this sound",
                                 "what's {n}", "describe {n}", "what is {n}", "what does {n} sound like",
                                 "write a short description of {n}"),
                       "held_out": ("can you tell me what {n} is", "give me a description of {n}")},
}
ANSWERS = {
    "colour": ("It is {c}.", "The colour is {c}.", "The shape is {c}."),
    "colour_audio": ("It is the note of {c}.", "That is the sound of {c}.", "This is the note of {c}."),
    "shape": ("It is a {s}.", "I see a {s}.", "The shape is a {s}."),
    "position": ("It is {pos}.", "The {s} is {pos}."),
    "direction": ("It is {dir}.", "The {s} is {dir}."),
    "rhythm": ("It is {r}.", "The tone is {r}."),
}
# Cross-modal asks: the target takes the source's colour (and shape, between pictures and videos).
CROSS = {
    ("image", "audio"): {"train": ("make a {r} sound for this picture", "what does this picture sound like as a {r} tone",
                                   "play the {r} note of this shape", "play this picture's colour as a {r} tone",
                                   "turn this picture into a {r} sound", "let me hear this shape's note, {rr}"),
                         "held_out": ("give me the note of this shape, {rr}",)},
    ("video", "audio"): {"train": ("make a {r} sound for this video", "what does this clip sound like as a {r} tone",
                                   "play the {r} note of this moving shape", "turn this video into a {r} sound",
                                   "let me hear this video's colour, {rr}"),
                         "held_out": ("give me the note of this clip, {rr}",)},
    ("audio", "image"): {"train": ("draw a {s} {pos} in the colour of this sound", "paint this sound as a {s} {pos}",
                                   "show me a {s} {pos} that looks like this tone",
                                   "make a picture of a {s} {pos} in this note's colour"),
                         "held_out": ("sketch a {s} {pos} with the colour of this note",)},
    ("audio", "video"): {"train": ("make a video of a {s} in the colour of this sound, {dir}",
                                   "animate a {s} that looks like this sound, {dir}", "show this sound as a {s} {dir}",
                                   "make a clip of a {s} {dir} in this tone's colour"),
                         "held_out": ("film a {s} {dir} with the colour of this note",)},
    ("image", "video"): {"train": ("show this shape {dir}", "animate this picture with the shape {dir}",
                                   "make a video of this shape {dir}", "make it move: {dir}",
                                   "turn this picture into a clip of the shape {dir}"),
                         "held_out": ("film this shape {dir}",)},
    ("video", "image"): {"train": ("draw this shape {pos}", "make a still picture of this shape {pos}",
                                   "show me this shape standing still {pos}", "paint the shape from this clip {pos}",
                                   "turn this video into a picture of the shape {pos}"),
                         "held_out": ("sketch this moving shape {pos}",)},
}
MADE = {  # what the assistant says before an item it makes: the item's own noun phrase, as captions say it
    "image": ("Here is a {c} {s} {pos}:", "Sure! Here is a {c} {s} {pos}:", "Here you go, a {c} {s} {pos}:",
              "This is a {c} {s} {pos}:"),
    "video": ("Here is a video of a {c} {s} {dir}:", "Sure! Here is a video of a {c} {s} {dir}:",
              "Here you go, a video of a {c} {s} {dir}:"),
    "audio": ("Here is a {r} {c} tone:", "Sure! Here is a {r} {c} tone:", "Here is the note of {c}, {r}:",
              "Here you go, a {r} {c} tone:"),
}
SOURCE_IS = {"image": "The picture shows a {c} {s}.", "video": "The video shows a {c} {s}.",
             "audio": "That is the note of {c}."}
ANSWER_POS = {"left": "on the left", "centre": "in the centre", "right": "on the right"}
ANSWER_DIR = {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down"}
ANSWER_RHYTHM = {"steady": "steady", "beeping": "beeping"}

# Edits of an item the conversation holds. {ref}: how the item is referred to.
EDITS = {
    "colour": ("make {ref} {c}", "change {ref} to {c}", "can {ref} be {c} instead", "now make {ref} {c}",
               "same thing but {c}", "recolour {ref} {c}", "make {ref} {c} please", "i want {ref} in {c}"),
    "shape": ("make {ref} a {s}", "turn {ref} into a {s}", "can {ref} be a {s} instead", "change the shape to a {s}",
              "same thing but a {s}", "now make {ref} a {s}"),
    "position": ("move {ref} {to}", "put {ref} {to}", "can you move {ref} {to}", "now put the shape {to}",
                 "shift {ref} {to}"),
    "direction": ("make {ref} go {d}", "now make {ref} move {d}", "can the shape in {ref} go {d} instead",
                  "make it move {d} instead", "change the direction to {d}"),
    "rhythm": ("make {ref} {r}", "can {ref} be {r} instead", "same note but {r}", "now make {ref} {r}",
               "make the tone {r}"),
}
CORRECTIONS = ("no, i meant {x}", "no, {x}", "sorry, i meant {x}", "actually, {x}", "not that: {x}",
               "wrong one, i wanted {x}")
EDITED = ("Here it is, {np}:", "Done! Now it is {np}:", "Sure, here is {np}:", "Of course. Here is {np}:")
REFS = {"image": ("the picture", "the image", "the drawing"), "video": ("the video", "the clip", "the animation"),
        "audio": ("the sound", "the tone", "that sound", "the note")}
ORDINALS = ("first", "second", "third", "fourth")
MOVE_TO_WORDS = {"left": ("to the left", "left"), "centre": ("to the centre", "to the middle"),
                 "right": ("to the right", "right")}
SECOND_LEAD = {"audio": "And here is its note, a {r} {c} tone:", "video": "And here is a video of a {c} {s} {dir}:"}
TWO = {  # two media in one answer: (first, second, request frames)
    ("image", "audio"): ("draw {o} and play its {r} note", "show me {o}, and let me hear its colour as a {r} tone",
                         "make a picture of {o} and a {r} sound of its colour"),
    ("video", "audio"): ("make a video of {o} and play its {r} note", "animate {o} and also play a {r} tone of its colour"),
    ("image", "video"): ("draw {o}, then make a video of it {dir}", "show me {o} and also animate it {dir}"),
}

# Outside the world: what people ask that nano cannot do. The answers never make media.
OTHER_THINGS = ("a cat", "a dog", "a house", "a tree", "a car", "a sunset", "a horse", "a flower", "a person",
                "my face", "a mountain", "the sea", "a bird", "a robot", "an apple", "a rainbow", "a city at night",
                "a castle", "a boat", "a lion", "a guitar", "a pizza", "the moon", "a dragon", "a butterfly")
OTHER_SOUNDS = ("a piano melody", "a dog barking", "rain", "a drum beat", "my favourite song", "birds singing",
                "a voice saying hello", "applause", "a guitar chord", "thunder", "a siren", "ocean waves")
OTHER_COLOURS = ("orange", "pink", "brown", "black", "white", "grey", "gold", "silver", "beige", "navy", "magenta",
                 "maroon", "turquoise", "lime")
OTHER_SHAPES = ("hexagon", "heart", "pentagon", "oval", "rectangle", "diamond", "cross", "arrow", "crescent",
                "cube", "spiral", "octagon", "line")
OTHER_MOTIONS = ("spinning", "bouncing", "moving diagonally", "growing", "shrinking", "rotating", "moving in a circle",
                 "zigzagging")
QUESTIONS_OUTSIDE = ("what is the capital of france", "what's 2 + 2", "who won the world cup", "what time is it",
                     "what's the weather like today", "write me a poem", "translate hello into spanish",
                     "tell me a joke", "how do i cook pasta", "what is the meaning of life", "who is the president",
                     "explain quantum physics", "write some python code", "how old are you", "what day is it",
                     "recommend a good book", "how far is the moon", "what is photosynthesis", "summarise this article",
                     "what's your favourite food", "do you like music", "can you help me with my homework")
CHAT = ("hello", "hi", "hey there", "who are you", "what can you do", "what are you", "help", "how are you",
        "what's your name", "good morning", "what do you know", "hi! who are you", "what can i ask you",
        "are you a robot", "introduce yourself", "what are you able to make")
CANNOT = ("Sorry, I can't do that. ", "I can't make that. ", "Sorry, that is outside what I know. ",
          "I'm afraid I can't. ")
GREET = ("Hi! I am NExT-GPT nano. ", "Hello! I'm NExT-GPT nano, a small model. ", "I am NExT-GPT nano. ")
DONT_KNOW = ("I don't know that. ", "Sorry, I can't answer that. ", "That is outside what I know. ")
# Small talk and questions about the model, each with its reply's opening; and questions about an attached item
# when nothing is attached (the model must notice there is nothing to describe).
SMALL_TALK = {
    "train": (("hello", GREET), ("hi there", GREET), ("good evening", GREET), ("who am i talking to", GREET),
              ("what can you do", GREET), ("what can you make", GREET), ("what are you good at", GREET),
              ("what do you do", GREET), ("tell me about yourself", GREET), ("what is nano", GREET),
              ("what kind of things can you draw", GREET), ("can you make videos", GREET),
              ("can you play sounds", GREET), ("which colours do you know", GREET), ("what shapes can you draw", GREET),
              ("how do i use you", GREET), ("what should i ask you", GREET), ("show me what you can do", GREET),
              ("what skills do you have", GREET), ("tell me your abilities", GREET),
              ("are you capable of making videos", GREET),
              ("thanks", ("You're welcome! ", "Glad to help! ")), ("thank you", ("You're welcome! ",)),
              ("cool", ("Thanks! ",)), ("great, thanks", ("You're welcome! ",)), ("nice", ("Thanks! ",)),
              ("ok", ("All right. ",)), ("bye", ("Goodbye! ",)), ("you are bad at this", ("Sorry! ",)),
              ("that's wrong", ("Sorry! ",)), ("what's up", GREET)),
    "held_out": (("hey", GREET), ("greetings", GREET), ("what are your abilities", GREET),
                 ("what are you capable of", GREET), ("explain what you do", GREET), ("list your skills", GREET),
                 ("can you draw anything", GREET), ("what can i do here", GREET), ("awesome, thank you", (
                     "You're welcome! ",)), ("thx", ("You're welcome! ",)), ("see you", ("Goodbye! ",)),
                 ("that's not right", ("Sorry! ",)), ("what do you know how to do", GREET)),
}
PRAISE = ("cool", "nice", "great", "awesome", "perfect", "lovely", "wonderful", "ok", "wow", "amazing", "good job")
NOTHING_ASKS = {
    "train": ("what is this", "describe this", "what do you see", "what colour is it", "what shape is it",
              "what is in the picture", "what is in this video", "what do you hear", "which way is it moving",
              "what note is this", "is it on the left", "tell me what this is", "what is it", "describe the image",
              "what colour is the sound", "what is shown here"),
    "held_out": ("what's in my photo", "can you describe my picture", "what colour is the shape",
                 "which direction does it go", "what does this sound like", "what am i showing you"),
}
NOTHING_SAYS = ("There is nothing attached yet: add a picture, video or sound, or ask me to make one. ",
                "I don't see a picture, video or sound here yet. ")
UPLOAD_SAYS = {
    "image": ("This picture is {m}: {cap}", "Sorry, this picture is {m}, so I can't describe it. {cap}"),
    "video": ("This video is {m}: {cap}", "Sorry, this clip is {m}, so I can't describe it. {cap}"),
    "audio": ("This sound is {m}: {cap}", "Sorry, this sound is {m}, so I can't describe it. {cap}"),
}
UPLOAD_ASKS = ("what is this", "describe this", "what do you see", "what is in this picture", "what's going on here",
               "tell me about this", "what is it", "what do you hear", "what colour is it", "what shape is it",
               "make a sound for this", "what is this sound")

# Requests that leave out the colour, the shape, where it is, how it moves or how the tone goes: the model makes the
# default and names it ("draw a star" -> "Here is a blue star in the centre:").
DEFAULTS = {"colour": "blue", "shape": "circle", "position": "centre", "direction": "right", "rhythm": "steady"}
TAIL = {"image": "position", "video": "direction", "audio": "rhythm"}  # the attribute after colour and shape
# What such a request names, and how often: leaving out the position, motion or rhythm is the most common.
NAMED = {"image": {("colour", "shape"): 5, ("colour", "position"): 1, ("shape", "position"): 1.5, ("colour",): 1,
                   ("shape",): 1.5},
         "video": {("colour", "shape"): 5, ("colour", "direction"): 1, ("shape", "direction"): 1.5, ("colour",): 1,
                   ("shape",): 1.5},
         "audio": {("colour",): 5.5, ("rhythm",): 3, (): 1.5}}
PLAIN_OBJECTS = {
    "image": {"train": ("{a} {c} {s}", "{a} {c} {s}", "{a} {c} {s}", "{a} {s} in {c}", "{a} {s} coloured {c}",
                        "{a} {c}-coloured {s}",
                        "{a} {s} that is {c}", "{a} {s} colored {c}", "{a} {c} {s} shape"),
              "held_out": ("{a} {s}, {c}", "{a} {s} painted {c}")},
    "video": {"train": ("{a} {c} {s}", "{a} {c} {s}", "{a} {c} {s}", "{a} {s} in {c}", "{a} {c} {s} moving",
                        "{a} moving {c} {s}",
                        "{a} {s} coloured {c} that moves", "{a} {c} {s} in motion", "{a} {c} {s} that moves"),
              "held_out": ("{a} {s}, {c}, in motion", "{a} {c} {s} on the move")},
    "audio": {"train": ("{a} {c} tone", "{a} {c} tone", "the {c} note", "the {c} note", "the note of {c}",
                        "the sound of {c}", "{a} {c} note",
                        "{c}'s note", "the tone of {c}", "{a} {c} sound", "the {c} tone"),
              "held_out": ("the pitch of {c}", "{a} note of {c}")},
}
# Questions about what the model itself just made, asked of the model ("what colour did you use?").
OWN_QUESTIONS = {
    "colour": {"train": ("what colour did you use", "which colour did you pick", "what colour did you make it",
                         "what color is the one you made", "what colour was that", "which colour did you paint it",
                         "what colour is your shape", "remind me, what colour was it",
                         "what colour did you choose for it"),
               "held_out": ("which colour did you choose", "what colour did you give it")},
    "colour_audio": {"train": ("which colour's note did you play", "whose note was that", "which colour did you play",
                               "what colour was that tone", "which colour's tone is that"),
                     "held_out": ("which colour's note did you pick", "what colour did you give the tone")},
    "shape": {"train": ("what shape did you draw", "which shape did you make", "what shape was that",
                        "which shape is yours", "what shape did you use", "what kind of shape did you make"),
              "held_out": ("which shape did you pick", "what shape did you go with")},
    "position": {"train": ("where did you put it", "where did you draw it", "which side did you put it on",
                           "where did you place the shape", "where is your shape"),
                 "held_out": ("on which side did you draw it", "where did it end up")},
    "direction": {"train": ("which way did you make it move", "where is your shape going",
                            "which direction did you animate it", "which way does your shape go",
                            "where did you make it go"),
                  "held_out": ("in which direction did you send it", "which way did you animate it")},
    "rhythm": {"train": ("did you make it beep", "is your tone steady", "was that steady or beeping",
                         "did you make it steady", "does your tone beep"),
               "held_out": ("did you make it pulse", "is the tone you made steady")},
}
# More ways to ask about an item (stage 6): the train side; the held-out side stays QUESTIONS's own.
MORE_QUESTIONS = {
    "colour": ("what colour does the shape have", "which colour is used", "what's its colour", "colour?",
               "what colour have you got there", "is it red or blue or what", "which colour is the thing in {n}",
               "tell me what colour it is", "do you know the colour of the shape", "what colour would you call it",
               "identify the colour", "what is the colour of {n}", "say the colour", "what colour is that shape"),
    "colour_audio": ("what colour is this note", "which colour's sound is {n}", "whose tone is {n}",
                     "what colour goes with {n}", "which colour makes this sound",
                     "tell me which colour this note belongs to", "what colour does {n} stand for",
                     "identify the colour of {n}", "colour of {n}?", "which of your colours is this"),
    "shape": ("which shape is shown", "what shape does {n} have", "identify the shape", "tell me what shape it is",
              "is it a circle or a square or what", "what shape have you got there", "what is the shape",
              "do you know which shape it is", "shape?", "say the shape", "what form does the shape have",
              "which of the shapes is it"),
    "position": ("what side is it on", "where is it placed", "is it in the middle", "where in {n} is the shape",
                 "which part of the frame is it in", "is it left or right", "where's it placed",
                 "tell me its position", "what is its position", "position?", "where does the shape appear",
                 "is the shape on the left"),
    "direction": ("where's it going", "which way is it heading", "what way does it go", "is it moving up or down",
                  "tell me which way it moves", "which direction is the shape going", "where does it move to",
                  "direction?", "what is the direction of the motion", "is it going left or right", "how is it moving"),
    "rhythm": ("is it beeping", "is it a steady tone", "does it pulse", "is the tone held or broken",
               "is {n} beeping or steady", "steady or beeping?", "does the sound stop and start", "is it continuous",
               "how is the tone played", "does it have gaps", "tell me the rhythm"),
    "describe": ("what have we got here", "what's going on in {n}", "tell me what you see", "describe what you see",
                 "what's happening in {n}", "what does it show", "can you describe it", "what is shown",
                 "explain what's in {n}", "please describe {n}", "what am i looking at"),
    "describe_audio": ("what am i hearing", "what's this noise", "describe the sound", "tell me what you hear",
                       "can you describe it", "what kind of sound is {n}", "explain {n}", "what is playing"),
}
# General knowledge, asked first or between other turns: nano does not know (`_general`).
GENERAL = {
    "train": ("what is the capital of spain", "what is the capital of germany", "who wrote romeo and juliet",
              "how many days are in a week", "what colour is the sky", "what colour is grass", "what shape is the earth",
              "what shape is a football", "is the sun a star", "where is paris", "which way is north",
              "what is the biggest animal", "how tall is mount everest", "what is 7 times 8",
              "who invented the telephone", "what language do they speak in brazil", "how many legs does a spider have",
              "when did the second world war end", "what is the speed of light", "what do bees make",
              "what is water made of", "who painted the mona lisa", "what is the largest ocean", "how do planes fly",
              "what's the best movie", "tell me a fun fact", "what should i eat tonight", "can you sing",
              "what is a triangle", "how many sides does a square have", "why is the sky blue",
              "what is the circle of life", "who is the best footballer", "what are you thinking about"),
    "held_out": ("what is the capital of japan", "who discovered gravity", "what colour are bananas",
                 "how many sides does a triangle have", "what is the tallest building", "which planet is red"),
}
# The questions of the `asks` task: MORE_QUESTIONS trained, QUESTIONS' held-out wording held out.
ASK_QUESTIONS = {k: {"train": v, "held_out": QUESTIONS[k]["held_out"]} for k, v in MORE_QUESTIONS.items()}
GREETINGS = ("", "", "hi, ", "hello! ", "hi there, ", "hey, ", "ok ", "hello, ")

# Plain talk (stage 7): requests as most people first type them, in the same short frames for what nano can and
# cannot make, so that the words decide and not the frame; items of the conversation taken into another medium or
# edited in plainer words, or in ways nano cannot; any question about any upload; general knowledge of every kind.
SHORT_FRAMES = {
    "image": {"train": ("draw {o}", "draw {o}", "draw {o}", "paint {o}", "paint {o}", "sketch {o}", "make {o}",
                        "make {o}", "show me {o}", "create {o}", "give me {o}", "draw me {o}", "{o}", "{o} please",
                        "generate {o}", "render {o}", "show {o}", "make me {o}", "a picture of {o}", "i want {o}",
                        "can you draw {o}", "draw {o} for me",
                        "i'm looking for {o}"),
              "held_out": ("doodle {o}", "i'm after {o}", "whip up {o}")},
    "video": {"train": ("animate {o}", "animate {o}", "animate {o}", "make a video of {o}", "make a video of {o}",
                        "a video of {o}", "video of {o}", "film {o}",
                        "make an animation of {o}", "a clip of {o}", "make a clip of {o}", "show me a video of {o}",
                        "create a video of {o}", "generate a video of {o}", "an animation of {o}", "record {o}",
                        "can you animate {o}", "make a movie of {o}", "i'm looking for a video of {o}"),
              "held_out": ("shoot a video of {o}", "i'm after a video of {o}", "whip up a clip of {o}")},
    "audio": {"train": ("play {o}", "play {o}", "play {o}", "make {o}", "play me {o}", "{o}", "give me {o}",
                        "let me hear {o}", "generate {o}",
                        "create {o}", "produce {o}", "{o} please", "i want {o}", "can you play {o}", "sound {o}",
                        "make me {o}", "i'm looking for {o}"),
              "held_out": ("i'd like to hear {o}", "i'm after {o}", "put on {o}")},
}
# What a request with nothing named asks for: the defaults, in the medium the words name.
BARE = {"image": ("something", "a picture", "a shape", "anything", "an image", "a drawing", "a pic", "a shape for me"),
        "video": ("a video", "an animation", "a clip", "something moving", "a moving shape", "a movie", "a video clip"),
        "audio": ("a sound", "a tone", "a note", "some audio", "a sound for me", "a noise", "a hum")}
BARE_FRAMES = {"image": ("draw {o}", "paint {o}", "make {o}", "sketch {o}", "show me {o}", "create {o}", "give me {o}"),
               "video": ("make {o}", "create {o}", "show me {o}", "give me {o}", "generate {o}", "render {o}"),
               "audio": ("play {o}", "make {o}", "give me {o}", "generate {o}", "let me hear {o}", "play me {o}")}
# A tone named by its rhythm as a noun ("a yellow beep").
RHYTHM_NOUNS = {"steady": ("hum", "drone", "long tone", "held note"), "beeping": ("beep", "beeps", "blip", "pulse")}
# An item of the conversation into another medium, by reference ({ref}); what the request leaves out is the default.
REFER = {
    "video": {"train": ("make a video of {ref} {dir}", "animate {ref}", "animate {ref} {dir}", "make {ref} move {dir}",
                        "turn {ref} into a video", "now a video of {ref}", "show {ref} {dir}", "make a clip of {ref}",
                        "can you animate {ref}", "put {ref} in a video, {dir}", "and a video of {ref}?"),
              "held_out": ("bring {ref} to life {dir}", "set {ref} in motion")},
    "image": {"train": ("draw {ref}", "draw {ref} {pos}", "make a picture of {ref}", "paint {ref} {pos}",
                        "turn {ref} into a picture", "now draw {ref}", "show me a still of {ref}", "sketch {ref}",
                        "make a drawing of {ref} {pos}", "and a picture of {ref}?"),
              "held_out": ("grab a still of {ref}", "freeze {ref} into a picture {pos}")},
    "audio": {"train": ("play its note", "play {ref} as a {r} tone", "what does {ref} sound like",
                        "make a sound of {ref}", "let me hear {ref}", "turn {ref} into a sound", "play the note of {ref}",
                        "now play its colour", "and its sound?", "give me its tone, {rr}", "play {ref}",
                        "make {ref} into a {r} sound"),
              "held_out": ("could i hear its note", "sound {ref} out, {rr}")},
}
# From a sound, which has no shape: the request names one, or the default.
REFER_FROM_SOUND = {
    "image": {"train": ("draw a {s} in that colour", "draw a {s} in its colour {pos}", "paint a picture of that colour",
                        "make a {s} that colour", "show me that colour as a {s} {pos}", "draw its colour",
                        "draw something in that colour"),
              "held_out": ("sketch a {s} with that colour",)},
    "video": {"train": ("animate a {s} in that colour {dir}", "make a video of that colour", "animate its colour",
                        "make a video of a {s} in its colour {dir}", "show that colour as a moving {s}"),
              "held_out": ("film a {s} with that colour {dir}",)},
}
# Edits in plainer words; the rhythm's by the new rhythm.
PLAIN_EDITS = {
    "colour": {"train": ("{c} instead", "try {c}", "how about {c}", "paint {ref} {c}", "colour {ref} {c}",
                         "i'd prefer {ref} {c}", "switch {ref} to {c}", "can you make {ref} {c}", "make {ref} {c} now",
                         "let's make {ref} {c}", "use {c} instead", "{c} please", "rather {c}"),
               "held_out": ("i'd rather have {ref} in {c}", "go with {c}")},
    "shape": {"train": ("a {s} instead", "try a {s}", "how about a {s}", "use a {s} instead", "swap {ref} for a {s}",
                        "can you make {ref} a {s}", "change {ref} to a {s}", "let's have a {s}", "make {ref} a {s} now",
                        "{s} please", "rather a {s}"),
              "held_out": ("i'd rather have a {s}", "go with a {s}")},
    "position": {"train": ("move {ref} {to}", "put {ref} {to} instead", "{to} instead", "can you put {ref} {to}",
                           "place {ref} {to}", "drag {ref} {to}", "shift {ref} over {to}"),
                 "held_out": ("i'd rather have {ref} {to}", "slide {ref} {to}")},
    "direction": {"train": ("make {ref} go {d}", "have {ref} move {d}", "let {ref} move {d}", "send {ref} {d}",
                            "{d} instead", "can {ref} go {d}", "make {ref} move {d} now"),
                  "held_out": ("i'd rather {ref} went {d}", "have {ref} head {d}")},
    "beeping": {"train": ("make {ref} beep", "make {ref} pulse", "make {ref} go on and off", "add beeps",
                          "make {ref} beep instead", "chop {ref} into beeps", "beeping please", "can {ref} beep"),
                "held_out": ("i'd rather {ref} beeped", "turn {ref} into beeps")},
    "steady": {"train": ("make {ref} steady", "hold {ref} steady", "stop the beeping", "make {ref} continuous",
                         "no beeps", "make {ref} one long tone", "steady please", "can {ref} be held"),
               "held_out": ("i'd rather {ref} held", "turn {ref} into one long note")},
}
REVERSE = ("reverse {ref}", "make {ref} go the other way", "the other way", "reverse the direction")
OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}
# Edits nano cannot make: a text that says what it can do, and no media.
OUTSIDE_EDITS = {"train": ("make {ref} spin", "make {ref} bigger", "make {ref} smaller", "make {ref} {oc}",
                           "turn {ref} into a {os}", "add {thing} next to {ref}", "add another {s}", "make {ref} louder",
                           "make {ref} quieter", "make {ref} faster", "make {ref} slower", "make {ref} 3d",
                           "make {ref} glow", "make {ref} bounce", "make {ref} longer", "change the background to {c}",
                           "give {ref} a face", "make {ref} sparkle", "rotate {ref}", "make {ref} transparent",
                           "put {ref} at the top", "move {ref} to the bottom", "make {ref} go diagonally",
                           "play {ref} on a piano", "make {ref} a chord", "add some music", "{oc} instead",
                           "a {os} instead", "make two of them", "add a second {s}"),
                 "held_out": ("make {ref} twice as big", "flip {ref} upside down", "make {ref} shiny",
                              "add {thing} behind {ref}")}
# General knowledge and other tasks, from templates and slots: the model says it does not know (or cannot).
KNOWLEDGE = {
    "train": ("what is the capital of {place}", "where is {place}", "who is {person}", "who was {person}",
              "tell me about {person}", "what is {thing}", "how does {thing} work", "explain {thing}",
              "what is {n} plus {m}", "what's {n} times {m}", "translate {word} into {lang}",
              "what's the weather in {place}", "recommend a {item}", "what does {word} mean", "how big is {place}",
              "when was {person} born", "what language is spoken in {place}", "why is {thing} important",
              "how do i {task}", "can you help me {task}", "what is the population of {place}",
              "is {person} still alive", "what do you think of {person}", "what {when} is it",
              "what {when} is it in {place}"),
    "held_out": ("do you know who {person} is", "give me some facts about {place}",
                 "what can you tell me about {thing}", "how would you describe {place}")}
CANNOT_DO = {"train": ("tell me a {genre}", "write a {genre} about {topic}", "write me a {genre}",
                       "sing a song about {topic}", "compose a {genre} about {topic}", "make up a {genre}"),
             "held_out": ("pen a {genre} about {topic}", "i'd love a {genre} about {topic}")}
SLOTS = {"place": ("italy", "france", "spain", "germany", "japan", "china", "india", "brazil", "canada", "egypt",
                   "kenya", "mexico", "australia", "norway", "peru", "london", "tokyo", "new york", "rome", "berlin",
                   "sydney", "paris", "cairo", "madrid", "the moon", "mars", "europe", "africa", "my town"),
         "person": ("einstein", "shakespeare", "mozart", "napoleon", "cleopatra", "newton", "the president",
                    "taylor swift", "leonardo da vinci", "marie curie", "gandhi", "picasso", "the pope", "my teacher",
                    "elon musk", "beethoven", "the queen", "darwin"),
         "thing": ("gravity", "the internet", "electricity", "democracy", "a black hole", "dna", "a computer",
                   "the stock market", "a volcano", "music", "the weather", "a car engine", "money", "sleep", "wifi",
                   "the sun", "chess", "a rainbow", "love", "the ocean"),
         "genre": ("joke", "story", "poem", "riddle", "song", "haiku", "limerick", "essay", "letter"),
         "topic": ("love", "the sea", "cats", "friendship", "summer", "space", "my dog", "the city", "winter"),
         "lang": ("french", "german", "spanish", "italian", "japanese", "chinese"),
         "word": ("hello", "thank you", "cat", "love", "serendipity", "goodbye", "house"),
         "task": ("with my homework", "fix my bike", "learn python", "bake bread", "write an email", "plan a trip",
                  "tie a tie", "study for a test"),
         "item": ("book", "movie", "restaurant", "game", "podcast", "song", "recipe"),
         "when": ("time", "day", "year", "month", "date", "season", "day of the week"),
         "n": tuple(str(k) for k in range(2, 13)), "m": tuple(str(k) for k in range(2, 13))}
GENERIC_ASKS = ("what is this", "what's this", "what is it", "describe this", "tell me about it", "what do we have here",
                "look at this", "what do you make of this", "can you tell what this is", "any idea what this is")
# How people ask about an upload without naming what they want to know: a world upload gets its description
LOOK_ASKS = GENERIC_ASKS + ("what do you see", "what is in this picture", "what's going on here", "tell me about this",
                            "what do you hear", "what is this sound")
# Every trained wording of a question about an item (the held-out side stays QUESTIONS')
ANY_QUESTIONS = {k: {"train": QUESTIONS[k]["train"] + MORE_QUESTIONS[k]
                     + (GENERIC_ASKS if k.startswith("describe") else ()), "held_out": QUESTIONS[k]["held_out"]}
                 for k in QUESTIONS}


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _side(table: dict, phrasing: str, rng, always: bool = False) -> str:
    """A train entry, or for the held-out phrasing a held-out one: always for a frame, half the time for the words
    inside it (so that their combinations are new too)."""
    if phrasing == "held_out" and (always or rng.uniform() < 0.5):
        return _pick(rng, table["held_out"])
    return _pick(rng, table["train"])


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _typo(word: str, rng) -> str:
    i = int(rng.integers(1, len(word) - 1))
    kind = rng.integers(3)
    if kind == 0:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    if kind == 1:
        return word[:i] + word[i + 1:]
    return word[:i] + word[i] + word[i:]


def roughen(text: str, rng) -> str:
    """How people type: case, punctuation, filler and small typos (never in an attribute word)."""
    protected = set(W.COLOURS) | set(W.SHAPES) | {"violet", "aqua", "left", "right", "up", "down", "centre",
                                                  "center", "middle", "steady", "beeping"}
    words = text.split(" ")
    if rng.uniform() < 0.15:
        k = int(rng.integers(len(words)))
        core = re.sub(r"\W", "", words[k])
        if len(core) >= 5 and core.lower() not in protected:
            words[k] = words[k].replace(core, _typo(core, rng))
    text = " ".join(words)
    if rng.uniform() < 0.5:
        text = text[:1].upper() + text[1:]
    if rng.uniform() < 0.3:
        text = text.rstrip(".!?")
    return text


def _words(modality: str, attrs: dict, phrasing: str, rng, swap: dict | None = None) -> dict:
    """The words for an item's attributes; `swap` replaces some of them (an outside colour or shape)."""
    s = attrs.get("shape", "")
    c = attrs.get("colour", "")
    slots = {"c": _pick(rng, COLOUR_WORDS[c]) if c else "", "s": _pick(rng, SHAPE_WORDS[s]) if s else ""}
    if "position" in attrs:
        slots["pos"] = _side(POSITION_WORDS[attrs["position"]], phrasing, rng)
    if "direction" in attrs:
        slots["dir"] = _side(MOVE_WORDS[attrs["direction"]], phrasing, rng)
    if "rhythm" in attrs:
        slots["r"] = _side(RHYTHM_ADJ[attrs["rhythm"]], phrasing, rng)
        slots["rr"] = _side(RHYTHM_ADV[attrs["rhythm"]], phrasing, rng)
    return slots | (swap or {})


def object_phrase(modality: str, attrs: dict, phrasing: str, rng, swap: dict | None = None) -> str:
    slots = _words(modality, attrs, phrasing, rng, swap)
    return _fill(_side(OBJECTS[modality], phrasing, rng), slots, rng)


def partial_object(modality: str, attrs: dict, named: set, phrasing: str, rng, swap: dict | None = None) -> str:
    """An object phrase that names only the attributes in `named` ("a star", "something red", "a beeping tone")."""
    slots = _words(modality, attrs, phrasing, rng, swap)
    if modality == "audio":
        noun = _pick(rng, ("tone", "note", "sound", "tone"))
        if "colour" in named:
            text = _side(PLAIN_OBJECTS["audio"], phrasing, rng)
        elif "rhythm" in named:
            text = _pick(rng, ("{a} {r} " + noun, "{a} {r} " + noun, "{a} " + noun + ", {rr}"))
        else:
            text = "{a} " + noun
        return _fill(text, slots, rng)
    tail = TAIL[modality]
    if {"colour", "shape"} <= named:
        text = _side(PLAIN_OBJECTS[modality if tail not in named else "image"], phrasing, rng)
    elif "colour" in named:
        text = _pick(rng, ("{a} {c} shape", "{a} shape in {c}", "something {c}", "{a} {c} one"))
    else:
        text = _pick(rng, ("{a} {s}", "{a} {s}", "{a} {s} shape"))
    if tail in named:
        text += _pick(rng, (" {pos}", ", {pos}")) if tail == "position" else " {dir}"
    return _fill(text, slots, rng)


def _fill(text: str, slots: dict, rng) -> str:
    first = text.format(a="A", **slots).split(" ")[1] if text.startswith("{a}") else ""
    art = _pick(rng, (_article(first),) * 4 + ("one", "a single")) if first else ""
    return text.format(a=art, **slots).replace("  ", " ").strip(" ,")


def request(modality: str, attrs: dict, phrasing: str, rng, named: set | None = None, short: bool = False,
            swap: dict | None = None) -> str:
    """A request for a new item of `modality` with `attrs`, worded freely; `named`: the attributes it names, if not
    all (the others are the defaults); `short`: without filler or politeness, as most people type ("draw a star");
    `swap`: words to put in place of the attributes' (`_words`' slots, or "o" for the whole object)."""
    noun = _side(MEDIUM_NOUNS[modality], phrasing, rng)
    frames = FRAMES[modality]
    if named is not None and modality == "video" and "direction" not in named:
        # with no motion named, the frame must say it is a video
        frames = {k: tuple(f for f in v if "{n}" in f or f.startswith(("animate", "film", "record")) or "watch" in f)
                  for k, v in frames.items()}
    frame = _side(frames, phrasing, rng, always=True)
    obj = object_phrase(modality, attrs, phrasing, rng, swap) if named is None else partial_object(
        modality, attrs, named, phrasing, rng, swap)
    obj = (swap or {}).get("o", obj)
    text = frame.format(o=obj, n=f"{_article(noun)} {noun}")
    if short:
        return roughen(text + _pick(rng, SHORT_ENDS), rng)
    return roughen(_prefix(frame, rng) + text + _pick(rng, SUFFIXES), rng)


def _prefix(frame: str, rng) -> str:
    """Filler and politeness before a frame; a frame that is already a whole sentence takes filler only."""
    if frame.startswith(("i ", "i'd", "can ", "could ", "let", "{", "picture this", "put", "what", "give me")):
        return _pick(rng, ("", "", "hey, ", "hi! ", "ok, ", "so "))
    return _pick(rng, PREFIXES)


def question(kind: str, modality: str, phrasing: str, rng, questions: dict = QUESTIONS) -> str:
    noun = _side(MEDIUM_NOUNS[modality], "in", rng)
    text = _side(questions[kind], phrasing, rng, always=True).format(n=_pick(rng, ("this ", "the ")) + noun)
    return roughen(_pick(rng, ("", "", "ok, ", "and ", "so ")) + text + _pick(rng, ("?", "?", "", " please?")), rng)


def say_made(modality: str, attrs: dict, rng) -> str:
    return _pick(rng, MADE[modality]).format(**answer_words(attrs))


def answer_words(attrs: dict) -> dict:
    """Attribute words in the assistant's one plain style (the oracles read them)."""
    return {"c": attrs.get("colour", ""), "s": attrs.get("shape", ""), "pos": ANSWER_POS.get(attrs.get("position"), ""),
            "dir": ANSWER_DIR.get(attrs.get("direction"), ""), "r": ANSWER_RHYTHM.get(attrs.get("rhythm"), "")}


def noun_phrase(modality: str, attrs: dict) -> str:
    w = answer_words(attrs)
    return {"image": "a {c} {s} {pos}", "video": "a video of a {c} {s} {dir}", "audio": "a {r} {c} tone"}[
        modality].format(**w)


def describe(modality: str, attrs: dict, rng) -> str:
    w = answer_words(attrs)
    if modality == "audio":
        return _pick(rng, ("It is a {r} {c} tone.", "I hear a {r} tone, the note of {c}.",
                           "This is a {r} {c} tone.")).format(**w)
    if modality == "video":
        return _pick(rng, ("It is a {c} {s} {dir}.", "I see a {c} {s} {dir}.",
                           "This video shows a {c} {s} {dir}.")).format(**w)
    return _pick(rng, ("It is a {c} {s} {pos}.", "I see a {c} {s} {pos}.", "This shows a {c} {s} {pos}.")).format(**w)


def _question_kind(attribute: str, modality: str) -> str:
    """The question table's key for an attribute (or "describe"): a sound's colour and description are its note's."""
    if modality == "audio" and attribute in ("colour", "describe"):
        return attribute + "_audio"
    return attribute


def answer(kind: str, attrs: dict, rng) -> str:
    return _pick(rng, ANSWERS[kind]).format(**answer_words(attrs))


# --- uploads as people make them -------------------------------------------------------------------------------

def _background(rng) -> tuple[int, int, int]:
    u = rng.uniform()
    if u < 0.3:
        return (255, 255, 255)
    if u < 0.6:
        g = int(rng.integers(200, 246))
        return (g, g, g)
    if u < 0.75:
        g = int(rng.integers(150, 200))
        return (g, g, g)
    base = rng.integers(205, 256, 3)
    return tuple(int(v) for v in base)


def _canvas_size(rng, sizes=(64, 96, 128, 160, 200, 256, 320, 400, 512)) -> tuple[int, int]:
    h = int(_pick(rng, sizes))
    aspect = _pick(rng, (1.0, 1.0, 1.0, 4 / 3, 5 / 4, 3 / 4))
    return 2 * round(h * aspect / 2), 2 * round(h / 2)


def _draw_frame(size, bg, colour, shape, cx, cy, radius) -> np.ndarray:
    """One anti-aliased frame of `size` (w, h): the shape at (cx, cy) in pixels, radius in pixels."""
    ss = 1 if max(size) > 256 else 2 if max(size) > 96 else 4
    canvas = Image.new("RGB", (size[0] * ss, size[1] * ss), bg)
    unit = radius / ((W.IMAGE_SIZE_RANGE[0] + W.IMAGE_SIZE_RANGE[1]) / 2)
    outline = W._shape_outline(shape, 0.0, 0.0, (W.IMAGE_SIZE_RANGE[0] + W.IMAGE_SIZE_RANGE[1]) / 2)
    pts = [((cx + x * unit) * ss, (cy + y * unit) * ss) for x, y in outline]
    ImageDraw.Draw(canvas).polygon(pts, fill=W.COLOURS[colour])
    return np.asarray(canvas.resize(size, Image.Resampling.BOX), dtype=np.uint8)


def upload_image(attrs: dict, rng) -> tuple[np.ndarray, str]:
    """A world picture as a person might upload it: any size and aspect, background, place within its third."""
    w, h = _canvas_size(rng)
    side = min(w, h)
    radius = side * (8.5 / 64) * rng.uniform(0.7, 1.6)
    third = {"left": 0, "centre": 1, "right": 2}[attrs["position"]]
    # the position names a third of the part ImageBind sees (the centred square crop of a wide picture)
    left = (w - side) / 2
    margin = 1.25 * radius  # the whole shape stays in the picture
    cx = np.clip(left + side * (third + 0.5) / 3 + rng.uniform(-0.1, 0.1) * side, margin, w - margin)
    cy = h / 2 + rng.uniform(-0.25, 0.25) * max(0.0, h - 2 * margin)
    pixels = _draw_frame((w, h), _background(rng), attrs["colour"], attrs["shape"], cx, cy, radius)
    return pixels, _pick(rng, ("png", "png", "jpg"))


def upload_video(attrs: dict, rng) -> tuple[np.ndarray, int]:
    """A world video at another size, frame rate and length."""
    w, h = _canvas_size(rng, (64, 96, 128, 160, 240))
    fps = int(_pick(rng, (6, 8, 10, 12, 15, 24, 25, 30)))
    n = max(4, int(round(fps * rng.uniform(0.75, 3.0))))
    side = min(w, h)
    radius = side * (7.2 / 64) * rng.uniform(0.75, 1.4)
    room = side - 2.6 * radius  # the path keeps the whole shape in every frame
    travel = min(side * rng.uniform(0.38, 0.58), 0.9 * room)
    bg = _background(rng)
    horizontal = attrs["direction"] in ("left", "right")
    sign = 1 if attrs["direction"] in ("right", "down") else -1
    slack = max(0.0, (room - travel) / 2)
    cx0, cy0 = w / 2 + rng.uniform(-slack, slack), h / 2 + rng.uniform(-slack, slack)
    frames = []
    for t in np.linspace(-0.5, 0.5, n):
        dx = sign * travel * t
        cx, cy = (cx0 + dx, cy0) if horizontal else (cx0, cy0 + dx)
        frames.append(_draw_frame((w, h), bg, attrs["colour"], attrs["shape"], cx, cy, radius))
    return np.stack(frames), fps


def upload_sound(attrs: dict, rng) -> tuple[np.ndarray, int]:
    """A world tone at another sample rate, in mono or stereo, pure or richer, at another loudness and beep rate."""
    sr = int(_pick(rng, (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)))
    duration = rng.uniform(0.6, 4.0)
    f0 = W.NOTES[attrs["colour"]] * (1 + rng.uniform(-0.02, 0.02))
    u = rng.uniform()
    partials = (1.0,) if u < 0.35 else W.HARMONICS if u < 0.6 else tuple(
        rng.uniform(0.1, 0.5) / k for k in range(1, int(rng.integers(3, 6))))
    partials = (1.0, *partials[1:])
    t = np.arange(int(duration * sr)) / sr
    wave = sum(a * np.sin(2 * np.pi * (k + 1) * f0 * t + rng.uniform(0, 6.28)) for k, a in enumerate(partials)
               if (k + 1) * f0 < sr / 2 * 0.9)
    wave = wave / np.abs(wave).max()
    if attrs["rhythm"] == "beeping":
        rate, duty = rng.uniform(2.5, 6.0), rng.uniform(0.35, 0.65)
        gate = ((t * rate) % 1.0 < duty).astype(np.float64)
    else:
        gate = np.ones_like(t)
    ramp = max(1, int(0.008 * sr))
    gate[:ramp] = gate[-ramp:] = 0
    kernel = np.hanning(2 * ramp + 1)
    gate = np.convolve(gate, kernel / kernel.sum(), mode="same")
    wave = rng.uniform(0.08, 0.95) * wave * gate
    if rng.uniform() < 0.4:
        wave = np.stack([wave, wave * rng.uniform(0.6, 1.0)], axis=1)
    return wave.astype(np.float32), sr


# Not from the world: what people upload that nano knows nothing of.

def _smooth_field(rng, w, h) -> np.ndarray:
    """A photo-like picture: smooth random colour fields at a few scales, some strokes and grain."""
    out = np.zeros((h, w, 3))
    for cells, weight in ((int(rng.integers(2, 5)), 1.0), (int(rng.integers(6, 16)), 0.5),
                          (int(rng.integers(20, 48)), 0.25)):
        small = rng.uniform(0, 255, (cells, cells, 3)).astype(np.uint8)
        out += weight * np.asarray(Image.fromarray(small).resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    out = out / 1.75
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(0, 12))):
        pts = [tuple(int(v) for v in rng.uniform(0, [w, h])) for _ in range(2)]
        draw.line(pts, fill=tuple(int(v) for v in rng.integers(0, 256, 3)), width=int(rng.integers(1, 8)))
    arr = np.asarray(img, dtype=np.float64) + rng.normal(0, rng.uniform(0, 12), (h, w, 3))
    return np.clip(arr, 0, 255).astype(np.uint8)


def _many_shapes(rng, w, h, bg=None) -> np.ndarray:
    """A scene with two to five world shapes: several objects, which nano does not describe."""
    bg = bg or _background(rng)
    side = min(w, h)
    canvas = np.zeros((h, w, 3), np.uint8)
    canvas[:] = bg
    img = Image.fromarray(canvas)
    for _ in range(int(rng.integers(2, 6))):
        shape, colour = _pick(rng, W.SHAPES), _pick(rng, tuple(W.COLOURS))
        r = side * rng.uniform(0.07, 0.16)
        cx, cy = rng.uniform(r, w - r), rng.uniform(r, h - r)
        unit = r / 8.5
        pts = [(cx + x * unit, cy + y * unit) for x, y in W._shape_outline(shape, 0, 0, 8.5)]
        ImageDraw.Draw(img).polygon(pts, fill=W.COLOURS[colour])
    return np.asarray(img)


def foreign_image(rng) -> np.ndarray:
    w, h = _canvas_size(rng, (64, 128, 224, 320, 480))
    kind = rng.uniform()
    if kind < 0.45:
        return _smooth_field(rng, w, h)
    if kind < 0.7:
        return _many_shapes(rng, w, h)
    if kind < 0.8:
        return rng.integers(0, 256, (h, w, 3)).astype(np.uint8)
    # stripes, checks or a gradient
    y, x = np.mgrid[0:h, 0:w] / max(w, h)
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    f = rng.uniform(3, 20)
    mix = (np.sin(2 * np.pi * f * (x * math.cos(kind * 9) + y * math.sin(kind * 9))) > 0) if kind < 0.9 else x
    return (a * (1 - mix[..., None]) + b * mix[..., None]).astype(np.uint8)


def foreign_video(rng) -> tuple[np.ndarray, int]:
    w, h = _canvas_size(rng, (64, 96, 128, 160))
    fps, n = 8, int(rng.integers(8, 24))
    kind = rng.uniform()
    if kind < 0.35:  # a photo-like picture panning by
        big = _smooth_field(rng, w * 2, h)
        return np.stack([big[:, int(k * w / n): int(k * w / n) + w] for k in range(n)]), fps
    if kind < 0.65:  # several shapes jumping around
        bg = _background(rng)
        return np.stack([_many_shapes(np.random.default_rng([int(rng.integers(1 << 30)), k]), w, h, bg)
                         for k in range(n)]), fps
    if kind < 0.8:  # noise
        return rng.integers(0, 256, (n, h, w, 3)).astype(np.uint8), fps
    colours = rng.integers(0, 256, (n, 1, 1, 3))  # flickering colour fields
    return np.broadcast_to(colours, (n, h, w, 3)).astype(np.uint8).copy(), fps


def foreign_sound(rng) -> tuple[np.ndarray, int]:
    sr = 16000
    n = int(sr * rng.uniform(1.0, 4.0))
    t = np.arange(n) / sr
    kind = rng.uniform()
    if kind < 0.25:  # noise, white or brown
        wave = rng.normal(0, 1, n)
        if rng.uniform() < 0.5:
            wave = np.cumsum(wave)
            wave -= np.convolve(wave, np.ones(400) / 400, mode="same")
    elif kind < 0.5:  # babble: a buzz through moving vowel formants, in syllables
        f0 = rng.uniform(90, 240) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
        buzz = np.sign(np.sin(2 * np.pi * np.cumsum(f0) / sr))
        wave = np.zeros(n)
        for formant in rng.uniform(300, 3000, 3):
            wave += np.sin(2 * np.pi * formant * t) * buzz
        wave *= (np.sin(2 * np.pi * rng.uniform(3, 6) * t) > -0.2)
    elif kind < 0.75:  # a melody or chords: several notes, not one colour's
        wave = np.zeros(n)
        cuts = np.sort(rng.integers(0, n, int(rng.integers(3, 9))))
        for a, b in zip(np.r_[0, cuts], np.r_[cuts, n]):
            for f in rng.uniform(150, 2500, int(rng.integers(1, 4))):
                wave[a:b] += np.sin(2 * np.pi * f * t[a:b])
    else:  # sweeps and clicks
        f = rng.uniform(100, 3000) * np.exp(np.log(rng.uniform(0.2, 5)) * t / t[-1])
        wave = np.sin(2 * np.pi * np.cumsum(f) / sr)
        if rng.uniform() < 0.5:
            wave = wave * (rng.uniform(0, 1, n) < 0.002) + 0.3 * wave
    wave = rng.uniform(0.2, 0.9) * wave / max(np.abs(wave).max(), 1e-6)
    return wave.astype(np.float32), sr


def _write(path: Path, modality: str, data, rate=None) -> None:
    import soundfile

    if modality == "image":
        if path.suffix == ".jpg":
            Image.fromarray(data).save(path, format="JPEG", quality=rate or 90)
        else:
            Image.fromarray(data).save(path, format="PNG")
    elif modality == "video":
        from moviepy import ImageSequenceClip

        clip = ImageSequenceClip(list(data), fps=rate)
        clip.write_videofile(os.fspath(path), codec="libx264", fps=rate, audio=False, logger=None,
                             pixel_format="yuv420p")
        clip.close()
    else:
        soundfile.write(os.fspath(path), data, rate, subtype="PCM_16", format="WAV")


# --- dialogues -------------------------------------------------------------------------------------------------

class _Talk:
    """One dialogue: its turns, its media items, and what the conversation holds so far."""

    def __init__(self, index: int, split: str, phrasing: str, rng, pools: dict, exact: bool = False):
        self.index, self.split, self.phrasing, self.rng, self.pools = index, split, phrasing, rng, pools
        # whether an edit or reference to an item other than the latest always names it (`_with_ref`); the tasks
        # before `recall` keep their draws, which could leave it unnamed ("same thing but blue")
        self.exact = exact
        self.turns: list[dict] = []
        self.media: dict[str, dict] = {}  # name -> {modality, caption, attributes}
        self.held: list[dict] = []  # the items in the conversation, in order: {modality, attributes, name}

    def human(self, text: str, upload: dict | None = None) -> None:
        media = []
        if upload:
            media = [{"modality": upload["modality"], "name": upload["name"], "at": 0}]
            self._keep(upload)
            if upload.get("attributes"):
                self.held.append(upload)
        self.turns.append({"from": "human", "value": text, "media": media})

    def gpt(self, kind: str, move: str, before: str, made: list[tuple[str, dict, str]] = (), asks=None,
            about: dict | None = None) -> None:
        """An assistant turn: text, then each made item with the text that leads into the next one."""
        text, media = before, []
        for k, (m, attrs, lead) in enumerate(made):
            item = self._made(m, attrs)
            if k:
                text += " " + lead
            media.append({"modality": m, "name": item["name"], "at": len(text)})
        turn = {"from": "gpt", "value": text, "media": media, "kind": kind, "move": move}
        if asks is not None:
            turn["asks"], turn["about"] = list(asks), about["name"]
        self.turns.append(turn)

    def _made(self, modality: str, attrs: dict) -> dict:
        """The world's own item of these attributes stands for what the decoder makes."""
        key = (modality, tuple(attrs[a] for a in W.ATTRIBUTES[modality]))
        options = self.pools["world"][key]
        item = {**options[int(self.rng.integers(len(options)))], "made": True}
        self._keep(item)
        self.held.append(item)
        return item

    def _keep(self, item: dict) -> None:
        self.media[item["name"]] = item

    def upload(self, modality: str, attrs: dict | None = None) -> dict:
        """A pooled upload: a world item as people make them (or the world's own, half the time), or a foreign one."""
        if attrs is None:
            pool = self.pools["foreign"][modality]
            return pool[int(self.rng.integers(len(pool)))]
        key = (modality, tuple(attrs[a] for a in W.ATTRIBUTES[modality]))
        varied, plain = self.pools["varied"].get(key), self.pools["plain"].get(key)
        pool = varied if varied and (not plain or self.rng.uniform() < 0.6) else plain or self.pools["world"][key]
        return dict(pool[int(self.rng.integers(len(pool)))])

    def record(self, task: str) -> dict:
        lists = {f"{m}_list": [{f"{m}_name": it["name"], "data_source": "nano", "caption": it["caption"],
                                "attributes": it.get("attributes")}
                               for it in self.media.values() if it["modality"] == m] for m in MODALITIES}
        return {"id": f"talk_{self.index:06d}", "task": task, "phrasing": self.phrasing, **lists,
                "conversation": self.turns}


def _make(t: _Talk, modality: str, attrs: dict | None = None, text: str | None = None) -> dict:
    """The user asks for a new item (free wording), the model makes it."""
    attrs = attrs or W.random_attributes(modality, t.rng)
    t.human(text or request(modality, attrs, t.phrasing, t.rng))
    t.gpt("media", f"t2{modality[0]}", say_made(modality, attrs, t.rng), [(modality, attrs, "")])
    return attrs


def _ask(t: _Talk, item: dict, upload: bool, questions: dict = QUESTIONS, lead: str = "") -> None:
    """A question about one attribute (or a description) of `item`, after `lead` (a greeting); answered in text."""
    m = item["modality"]
    kind = _pick(t.rng, (*W.ATTRIBUTES[m], "describe"))
    _answer(t, item, kind, lead + question(_question_kind(kind, m), m, t.phrasing, t.rng, questions), upload)


def _answer(t: _Talk, item: dict, kind: str, q: str, upload: bool) -> None:
    """The user asks `q` about `kind` of `item` (an attribute, or "describe"); the model answers in text."""
    m, attrs = item["modality"], item["attributes"]
    if kind == "describe":
        reply, asks = describe(m, attrs, t.rng), W.ATTRIBUTES[m]
    else:
        reply, asks = answer(_question_kind(kind, m), attrs, t.rng), (kind,)
    t.human(q, item if upload else None)
    move = f"{m[0]}2t" if upload else "own_question" if item.get("made") else "upload_question"
    t.gpt("answer", move, reply, asks=asks, about=item)


def _cross(t: _Talk, src: str, dst: str, source: dict | None = None) -> None:
    src_attrs = W.random_attributes(src, t.rng) if source is None else source["attributes"]
    dst_attrs = W.random_attributes(dst, t.rng)
    dst_attrs["colour"] = src_attrs["colour"]
    if "shape" in src_attrs and "shape" in dst_attrs:
        dst_attrs["shape"] = src_attrs["shape"]
    slots = _words(dst, dst_attrs, t.phrasing, t.rng)
    frame = _side(CROSS[(src, dst)], t.phrasing, t.rng, always=True)
    text = roughen(_prefix(frame, t.rng) + frame.format(**slots) + _pick(t.rng, SUFFIXES), t.rng)
    t.human(text, t.upload(src, src_attrs) if source is None else None)
    lead = say_made(dst, dst_attrs, t.rng)
    if t.rng.uniform() < 0.5:
        lead = SOURCE_IS[src].format(**answer_words(src_attrs)) + " " + lead
    t.gpt("media", f"{src[0]}2{dst[0]}", lead, [(dst, dst_attrs, "")])


def _refer(t: _Talk, item: dict) -> str:
    """How the user points at `item` among what the conversation holds."""
    same = [h for h in t.held if h["modality"] == item["modality"]]
    if item is t.held[-1] and t.rng.uniform() < 0.5:
        return _pick(t.rng, ("it", "it", "that"))
    if len(same) > 1:
        k = [i for i, h in enumerate(same) if h is item][0]
        noun = _pick(t.rng, REFS[item["modality"]]).split(" ")[-1]
        return f"the {ORDINALS[min(k, 3)]} {noun}" if k < 4 else f"the last {noun}"
    if t.rng.uniform() < 0.2 and len(t.held) > 1:
        k = [i for i, h in enumerate(t.held) if h is item][0]
        if k < 4:
            return f"the {ORDINALS[k]} one"
    return _pick(t.rng, REFS[item["modality"]])


def _with_ref(t: _Talk, item: dict, options: tuple) -> tuple:
    """In an exact dialogue, the options that name `item` ({ref}) when it is not the latest item: "its" and "that
    colour" become the item's; options that cannot name it are left out, or, if none can, name it at the end."""
    if not t.exact or item is t.held[-1]:
        return options
    named = [o.replace("that colour", "the colour of {ref}").replace("its ", "{ref}'s ") for o in options]
    return tuple(o for o in named if "{ref}" in o) or tuple(o + " for {ref}" for o in options)


def _sides_with_ref(t: _Talk, item: dict, table: dict) -> dict:
    return {k: _with_ref(t, item, v) for k, v in table.items()}


def _edit(t: _Talk, item: dict) -> None:
    m, attrs = item["modality"], dict(item["attributes"])
    name = _pick(t.rng, W.ATTRIBUTES[m])
    attrs[name] = _pick(t.rng, [v for v in W.VALUES[name] if v != attrs[name]])
    ref = _refer(t, item)
    w = {"ref": ref, "c": attrs["colour"], "s": attrs.get("shape", ""), "r": _side(RHYTHM_ADJ[attrs["rhythm"]],
         t.phrasing, t.rng) if "rhythm" in attrs else "", "d": attrs.get("direction", ""),
         "to": _pick(t.rng, MOVE_TO_WORDS[attrs["position"]]) if "position" in attrs else ""}
    text = _pick(t.rng, _with_ref(t, item, EDITS[name])).format(**w)
    t.human(roughen(_pick(t.rng, ("", "", "now ", "ok, ", "great. ", "nice! ")) + text
                    + _pick(t.rng, SUFFIXES), t.rng))
    t.gpt("media", "edit", _pick(t.rng, EDITED).format(np=noun_phrase(m, attrs)), [(m, attrs, "")])


def _correct(t: _Talk) -> None:
    """The user meant something else than the item just made: one attribute differs."""
    item = t.held[-1]
    m, attrs = item["modality"], dict(item["attributes"])
    name = _pick(t.rng, W.ATTRIBUTES[m])
    attrs[name] = _pick(t.rng, [v for v in W.VALUES[name] if v != attrs[name]])
    what = {"colour": lambda: _pick(t.rng, (attrs["colour"], f"{attrs['colour']} one", f"a {attrs['colour']} one")),
            "shape": lambda: f"a {_pick(t.rng, SHAPE_WORDS[attrs['shape']])}",
            "position": lambda: _side(POSITION_WORDS[attrs["position"]], t.phrasing, t.rng),
            "direction": lambda: _side(MOVE_WORDS[attrs["direction"]], t.phrasing, t.rng),
            "rhythm": lambda: _side(RHYTHM_ADJ[attrs["rhythm"]], t.phrasing, t.rng)}[name]()
    t.human(roughen(_pick(t.rng, CORRECTIONS).format(x=what), t.rng))
    t.gpt("media", "correct", _pick(t.rng, ("Sorry! ", "Oh, I see. ", "My mistake. ", "")) + say_made(m, attrs, t.rng),
          [(m, attrs, "")])


def _two(t: _Talk) -> None:
    (a, b), frames = list(TWO.items())[int(t.rng.integers(len(TWO)))]
    first = W.random_attributes(a, t.rng)
    second = {**W.random_attributes(b, t.rng), "colour": first["colour"]}
    if "shape" in second:
        second["shape"] = first["shape"]
    slots = _words(b, second, t.phrasing, t.rng)
    slots["o"] = object_phrase(a, first, t.phrasing, t.rng)
    frame = _pick(t.rng, frames)
    t.human(roughen(_prefix(frame, t.rng) + frame.format(**slots) + _pick(t.rng, SUFFIXES), t.rng))
    t.gpt("media", "two_media", say_made(a, first, t.rng),
          [(a, first, ""), (b, second, SECOND_LEAD[b].format(**answer_words(second)))])


def _named(m: str, rng) -> set:
    """The attributes a request that leaves some out names, as often as people name them (`NAMED`)."""
    options = list(NAMED[m])
    weights = np.array([NAMED[m][o] for o in options])
    return set(options[int(rng.choice(len(options), p=weights / weights.sum()))])


def _defaults_for_rest(m: str, attrs: dict, named: set) -> None:
    """The attributes a request leaves out take their defaults (`DEFAULTS`)."""
    attrs.update({a: DEFAULTS[a] for a in W.ATTRIBUTES[m] if a not in named})


def _swap(m: str, named: set, rng) -> tuple[set, dict]:
    """What a request outside the world puts in place of the world's words: another colour, another shape or
    another thing (`request`'s `swap`); `named` gains the attribute swapped."""
    u = rng.uniform()
    if u < 0.4 or (m == "audio" and u < 0.6):
        return named | {"colour"}, {"c": _pick(rng, OTHER_COLOURS)}
    if u < 0.75 and m != "audio":
        return named | {"shape"}, {"s": _pick(rng, OTHER_SHAPES)}
    return named, {"o": _pick(rng, OTHER_SOUNDS if m == "audio" else OTHER_THINGS)}


def outside_request(m: str, phrasing: str, rng, short: bool) -> str:
    """A request in the world's own frames and object phrases (`request`) with one thing nano cannot make in
    place of a colour, a shape or the whole object: the frame says nothing about whether nano can make it."""
    attrs, named, swap = _outside_draw(m, rng)
    return request(m, attrs, phrasing, rng, named, short, swap)


def _outside_draw(m: str, rng) -> tuple[dict, set | None, dict]:
    """What a request outside the world asks for: the item's attributes (defaults for those left out), the ones the
    request names (None: all of them) and the words swapped in (`_swap`)."""
    attrs = W.random_attributes(m, rng)
    named, swap = _swap(m, set(W.ATTRIBUTES[m]) if rng.uniform() < 0.5 else _named(m, rng), rng)
    _defaults_for_rest(m, attrs, named)
    return attrs, None if named == set(W.ATTRIBUTES[m]) else named, swap


def _outside(t: _Talk) -> None:
    """A request or question outside the world: a short text saying what nano can do, no media."""
    rng = t.rng
    kind = rng.uniform()
    c, s = _pick(rng, tuple(W.COLOURS)), _pick(rng, W.SHAPES)
    if kind < 0.62:
        t.human(outside_request(_pick(rng, MODALITIES), t.phrasing, rng, short=rng.uniform() < 0.4))
        t.gpt("capability", "outside", _pick(rng, CANNOT) + CAPABILITIES)
        return
    if kind < 0.7:
        n = _pick(rng, ("two", "three", "four", "many", "some"))
        text = _pick(rng, (f"draw {n} {c} {s}s", f"draw a {c} {s} and a {_pick(rng, tuple(W.COLOURS))} "
                           f"{_pick(rng, W.SHAPES)}", f"make a video of {n} {s}s moving right",
                           f"show me a {c} {s} next to a {_pick(rng, W.SHAPES)}"))
    elif kind < 0.76:
        text = f"make a video of a {c} {s} {_pick(rng, OTHER_MOTIONS)}"
    elif kind < 0.88:
        text = _pick(rng, QUESTIONS_OUTSIDE)
    else:
        text = _pick(rng, CHAT)
    text = roughen(_pick(rng, PREFIXES[:4]) + text + _pick(rng, ("?", ".", "", "!", " please")), rng)
    if kind >= 0.88:
        reply = _pick(rng, GREET) + CAPABILITIES
    elif kind >= 0.76:
        reply = _pick(rng, DONT_KNOW) + CAPABILITIES
    else:
        reply = _pick(rng, CANNOT) + CAPABILITIES
    t.human(text)
    t.gpt("capability", "outside", reply)


def _foreign_upload(t: _Talk) -> None:
    m = _pick(t.rng, ("image", "image", "video", "audio"))
    item = t.upload(m)
    t.human(roughen(_pick(t.rng, UPLOAD_ASKS) + _pick(t.rng, ("?", "", ".")), t.rng), item)
    t.gpt("upload", "foreign_upload", _foreign_says(m, t.rng))


def _foreign_says(modality: str, rng) -> str:
    cap = ("I only know single coloured shapes on a plain background, their motions and their notes."
           if modality != "audio" else "I only know the steady or beeping notes of my six colours.")
    return _pick(rng, UPLOAD_SAYS[modality]).format(m=UPLOAD_MARK, cap=cap)


def _small_talk(t: _Talk, greet: bool = False) -> None:
    """Small talk, a question about the model, or (with nothing in the conversation yet) a question about an
    attached item that is not there, after a greeting if `greet`: a friendly text that says what nano can do, no
    media."""
    rng = t.rng
    if not t.held and rng.uniform() < 0.45:
        text, reply = _side(NOTHING_ASKS, t.phrasing, rng, always=True), _pick(rng, NOTHING_SAYS)
        if greet:
            text = _pick(rng, GREETINGS) + text
    else:
        text, openings = _side(SMALL_TALK, t.phrasing, rng, always=True)
        reply = _pick(rng, openings)
        if reply == "You're welcome! " and rng.uniform() < 0.4:  # "cool, thank you": thanks after a word of praise
            text = f"{_pick(rng, PRAISE)}, {text}"
    t.human(roughen(text + _pick(rng, ("?", ".", "", "!")), rng))
    t.gpt("capability", "small_talk", reply + CAPABILITIES)


def _defaults(t: _Talk) -> None:
    """A request that leaves some attributes out: the model makes their defaults and names them."""
    m = _pick(t.rng, MODALITIES)
    named = _named(m, t.rng)
    attrs = W.random_attributes(m, t.rng)
    _defaults_for_rest(m, attrs, named)
    t.human(request(m, attrs, t.phrasing, t.rng, named, short=t.rng.uniform() < 0.4))
    t.gpt("media", "defaults", say_made(m, attrs, t.rng), [(m, attrs, "")])


def _own_ask(t: _Talk, item: dict) -> None:
    """A question to the model about the item it just made ("what colour did you use?"), answered in text."""
    m, attrs = item["modality"], item["attributes"]
    kind = _pick(t.rng, W.ATTRIBUTES[m])
    qk = _question_kind(kind, m)
    q = _side(OWN_QUESTIONS[qk], t.phrasing, t.rng, always=True)
    t.human(roughen(_pick(t.rng, ("", "", "ok, ", "and ", "so ", "thanks! ", "nice. ")) + q
                    + _pick(t.rng, ("?", "?", "")), t.rng))
    t.gpt("answer", "own_question", answer(qk, attrs, t.rng), asks=(kind,), about=item)


def _asks(t: _Talk) -> None:
    """An upload and one to three questions about it, in `ASK_QUESTIONS`' wording."""
    m = _pick(t.rng, MODALITIES)
    item = t.upload(m, W.random_attributes(m, t.rng))
    for k in range(int(t.rng.integers(1, 4))):
        _ask(t, item, upload=k == 0, questions=ASK_QUESTIONS)


def _general(t: _Talk) -> None:
    """A general-knowledge question: nano says it does not know, and what it can do."""
    text = _side(GENERAL, t.phrasing, t.rng, always=True)
    t.human(roughen(_pick(t.rng, ("", "", "hey, ", "ok, ", "so ", "quick question: ")) + text
                    + _pick(t.rng, ("?", "?", "", "!")), t.rng))
    t.gpt("capability", "outside", _pick(t.rng, DONT_KNOW) + CAPABILITIES)


def _followup(t: _Talk) -> None:
    """A conversation in which the person also chats, greets, thanks, asks the model about what it made, and
    leaves out what the defaults fill in, among the usual exchanges."""
    rng = t.rng
    for k in range(int(rng.integers(2, 6))):
        u = rng.uniform()
        if u < 0.2:
            _small_talk(t, greet=True)
        elif u < 0.5 and t.held and t.held[-1].get("made"):
            _own_ask(t, t.held[-1])
        elif u < 0.7:
            _defaults(t)
        else:
            _move(t, first=k == 0)


def _move(t: _Talk, first: bool) -> None:
    """One exchange of a conversation, chosen among what people do."""
    rng = t.rng
    u = rng.uniform()
    held = [h for h in t.held if h.get("attributes")]
    if first or not held:
        if u < 0.55:
            _make(t, _pick(rng, ("image", "video", "audio")))
        elif u < 0.75:
            m = _pick(rng, ("image", "video", "audio"))
            _ask(t, t.upload(m, W.random_attributes(m, rng)), upload=True)
        elif u < 0.87:
            src, dst = list(CROSS)[int(rng.integers(len(CROSS)))]
            _cross(t, src, dst)
        else:
            _two(t)
        return
    if u < 0.22:  # a new request, often for another medium
        _make(t, _pick(rng, ("image", "video", "audio")))
    elif u < 0.4:  # a question about the item just made or shown
        _ask(t, held[-1], upload=False)
    elif u < 0.58:
        _edit(t, held[-1] if rng.uniform() < 0.5 else _pick(rng, held))
    elif u < 0.66 and t.turns[-1]["kind"] == "media":
        _correct(t)
    elif u < 0.76:  # the conversation's item into another medium
        src = held[-1]
        dst = _pick(rng, [d for (s, d) in CROSS if s == src["modality"]])
        _cross(t, src["modality"], dst, source=src)
    elif u < 0.82:
        _two(t)
    elif u < 0.9:
        _outside(t)
    else:
        m = _pick(rng, ("image", "video", "audio"))
        _ask(t, t.upload(m, W.random_attributes(m, rng)), upload=True)


def _short(t: _Talk) -> None:
    """A request as most people first type it ("draw a blue star", "play a sound"): what it leaves out is the
    default; or, in the same short frames, something nano cannot make."""
    rng = t.rng
    m = _pick(rng, MODALITIES)
    if rng.uniform() < 0.35:
        return _short_outside(t, m)
    attrs = W.random_attributes(m, rng)
    named = _named(m, rng) if rng.uniform() < 0.5 else {a for a in W.ATTRIBUTES[m] if rng.uniform() < 0.5}
    _defaults_for_rest(m, attrs, named)
    if not named:
        text = _pick(rng, BARE_FRAMES[m]).format(o=_pick(rng, BARE[m]))
    else:
        frame = _side(SHORT_FRAMES[m], t.phrasing, rng, always=True)
        obj = _short_object(m, attrs, named, t.phrasing, rng)
        if m == "audio" and "rhythm" in named and rng.uniform() < 0.4:
            noun = _pick(rng, RHYTHM_NOUNS[attrs["rhythm"]])
            obj = f"{_article(noun)} {attrs['colour'] + ' ' if 'colour' in named else ''}{noun}"
        text = frame.format(o=obj)
    t.human(roughen(text + _pick(rng, SHORT_ENDS), rng))
    t.gpt("media", "defaults", say_made(m, attrs, rng), [(m, attrs, "")])


def _short_object(m: str, attrs: dict, named: set, phrasing: str, rng, swap: dict | None = None) -> str:
    """A short request's object: every attribute named (`object_phrase`) or some (`partial_object`); `swap` as in
    `request`."""
    if named == set(W.ATTRIBUTES[m]):
        return (swap or {}).get("o") or object_phrase(m, attrs, phrasing, rng, swap)
    return (swap or {}).get("o") or partial_object(m, attrs, named, phrasing, rng, swap)


def _short_outside(t: _Talk, m: str) -> None:
    rng = t.rng
    c, s = _pick(rng, tuple(W.COLOURS)), _pick(rng, W.SHAPES)
    if rng.uniform() < 0.7:  # the in-world short request's own object phrase, one word swapped
        attrs = W.random_attributes(m, rng)
        named, swap = _swap(m, _named(m, rng), rng)
        obj = _short_object(m, attrs, named, t.phrasing, rng, swap)
    elif m == "audio":  # or what no single note is
        obj = _pick(rng, ("music", "a song", "a melody", f"a {c} chord", "a chord", "a drum roll", "my ringtone"))
    else:  # or more than one shape, or a motion or place nano does not know
        obj = _pick(rng, (f"two {c} {s}s", f"a {c} {s} and a {_pick(rng, W.SHAPES)}", f"some {s}s",
                          f"a {c} {s} {_pick(rng, OTHER_MOTIONS)}" if m == "video" else f"a {c} {s} at the top"))
    t.human(roughen(_side(SHORT_FRAMES[m], t.phrasing, rng, always=True).format(o=obj)
                    + _pick(rng, SHORT_ENDS), rng))
    t.gpt("capability", "outside", _pick(rng, CANNOT) + CAPABILITIES)


def _refer_to(t: _Talk, item: dict) -> None:
    """The conversation's item into another medium, by reference ("animate it", "play its note")."""
    rng = t.rng
    src = item["modality"]
    dst = _pick(rng, [d for d in MODALITIES if d != src])
    attrs = {**W.random_attributes(dst, rng), "colour": item["attributes"]["colour"]}
    table = REFER_FROM_SOUND[dst] if src == "audio" else REFER[dst]
    frame = _side(_sides_with_ref(t, item, table), t.phrasing, rng, always=True)
    if "shape" in attrs:
        if src != "audio":
            attrs["shape"] = item["attributes"]["shape"]
        elif "{s}" not in frame:
            attrs["shape"] = DEFAULTS["shape"]
    tail = TAIL[dst]
    if not any(f"{{{k}}}" in frame for k in ("pos", "dir", "r", "rr")):
        attrs[tail] = DEFAULTS[tail]
    slots = _words(dst, attrs, t.phrasing, rng)
    text = frame.format(ref=_refer(t, item), **slots).replace("  ", " ")
    t.human(roughen(_pick(rng, ("", "", "now ", "ok, ", "great, ", "and ")) + text + _pick(rng, ("", "", ".", "?", "!")),
                    rng))
    t.gpt("media", "refer", say_made(dst, attrs, rng), [(dst, attrs, "")])


def _plain_edit(t: _Talk, item: dict) -> None:
    """An edit in plainer words; or one nano cannot make, answered with what it can do."""
    rng = t.rng
    m, attrs = item["modality"], dict(item["attributes"])
    ref = _refer(t, item)
    if rng.uniform() < 0.35:
        w = {"ref": ref, "c": _pick(rng, tuple(W.COLOURS)), "s": attrs.get("shape", "circle"),
             "oc": _pick(rng, OTHER_COLOURS), "os": _pick(rng, OTHER_SHAPES), "thing": _pick(rng, OTHER_THINGS)}
        t.human(roughen(_side(OUTSIDE_EDITS, t.phrasing, rng, always=True).format(**w), rng))
        t.gpt("capability", "outside", _pick(rng, CANNOT) + CAPABILITIES)
        return
    name = _pick(rng, W.ATTRIBUTES[m])
    old = attrs[name]
    attrs[name] = _pick(rng, [v for v in W.VALUES[name] if v != old])
    if name == "direction" and attrs[name] == OPPOSITE[old] and rng.uniform() < 0.4:
        text = _pick(rng, _with_ref(t, item, REVERSE))
    else:
        text = _side(_sides_with_ref(t, item, PLAIN_EDITS[attrs[name] if name == "rhythm" else name]), t.phrasing,
                     rng, always=True)
    w = {"ref": ref, "c": _pick(rng, COLOUR_WORDS[attrs["colour"]]), "s": _pick(rng, SHAPE_WORDS[attrs["shape"]])
         if "shape" in attrs else "", "d": attrs.get("direction", ""),
         "to": _pick(rng, MOVE_TO_WORDS[attrs["position"]]) if "position" in attrs else ""}
    t.human(roughen(_pick(rng, ("", "", "now ", "ok, ", "hmm, ", "no, ")) + text.format(**w)
                    + _pick(rng, ("", "", ".", "!", " please")), rng))
    t.gpt("media", "edit", _pick(rng, EDITED).format(np=noun_phrase(m, attrs)), [(m, attrs, "")])


def _plain_talk(t: _Talk, exchange) -> None:
    """An item made (often by a short request) or uploaded, then one to three turns of `exchange` on the
    conversation's items, with a question to the model or a new request in between now and then."""
    rng = t.rng
    if rng.uniform() < 0.7:
        _short(t) if rng.uniform() < 0.4 else _make(t, _pick(rng, MODALITIES))
    else:
        m = _pick(rng, MODALITIES)
        _ask(t, t.upload(m, W.random_attributes(m, rng)), upload=True)
    for _ in range(int(rng.integers(1, 4))):
        held = [h for h in t.held if h.get("attributes")]
        if not held:
            _short(t)
            continue
        u = rng.uniform()
        item = held[-1] if rng.uniform() < 0.75 else _pick(rng, held)
        if u < 0.7:
            exchange(t, item)
        elif u < 0.85 and held[-1].get("made"):
            _own_ask(t, held[-1])
        else:
            _short(t)


def _any_upload(t: _Talk) -> None:
    """Any question, in any trained wording, about an upload: one of the world's (three in five) or one from outside
    it (two in five), drawn after the question so that only the upload, never the wording, tells which; or, with
    nothing attached, a question about an attachment that is not there."""
    rng = t.rng
    u = rng.uniform()
    greet = _pick(rng, GREETINGS)
    foreign = False
    if u < 0.2:
        text = greet + (_pick(rng, GENERIC_ASKS) if rng.uniform() < 0.5 else
                        _side(NOTHING_ASKS, t.phrasing, rng, always=True))
        t.human(roughen(text + _pick(rng, ("?", "", ".")), rng))
        t.gpt("capability", "small_talk", _pick(rng, NOTHING_SAYS) + CAPABILITIES)
    else:
        foreign = _upload_question(t, greet)
    if rng.uniform() < 0.4:
        _move(t, first=foreign or not t.held)


def _upload_question(t: _Talk, greet: str = "", foreign_share: float = 0.4) -> bool:
    """Any question, in any trained wording, about an upload of any medium: one of the world's, or (`foreign_share`
    of the time) one from outside it, drawn after the question. Returns whether it was foreign."""
    rng = t.rng
    m = _pick(rng, MODALITIES)
    kind = _pick(rng, (*W.ATTRIBUTES[m], "describe", "describe"))
    if kind == "describe" and rng.uniform() < 0.5:
        q = roughen(_pick(rng, LOOK_ASKS) + _pick(rng, ("?", "", ".")), rng)
    else:
        q = question(_question_kind(kind, m), m, t.phrasing, rng, ANY_QUESTIONS)
    foreign = rng.uniform() < foreign_share
    if foreign:
        t.human(greet + q, t.upload(m))
        t.gpt("upload", "foreign_upload", _foreign_says(m, rng))
    else:
        _answer(t, t.upload(m, W.random_attributes(m, rng)), kind, greet + q, upload=True)
    return foreign


def _late_upload(t: _Talk) -> None:
    """An upload after one to three turns of any kind (requests, questions, edits, small talk, things outside the
    world), asked any question: foreign half the time, so that the upload, not what came before, tells which. Another
    turn may follow it."""
    rng = t.rng
    for k in range(int(rng.integers(1, 4))):
        u = rng.uniform()
        if u < 0.6:
            _move(t, first=k == 0)
        elif u < 0.8:
            _pick(rng, (_knowledge_turn, _general, _outside))(t)
        else:
            _small_talk(t)
    foreign = _upload_question(t, foreign_share=0.5)
    if rng.uniform() < 0.4:
        _move(t, first=foreign or not t.held)


def _knowledge(t: _Talk) -> None:
    """General knowledge, or a task nano cannot do, around ordinary exchanges now and then."""
    if t.rng.uniform() < 0.4:
        _move(t, first=True)
    _knowledge_turn(t)
    if t.rng.uniform() < 0.4:
        _move(t, first=False)


def _knowledge_turn(t: _Talk) -> None:
    """General knowledge, or a task nano cannot do, filled in from slots: it says so, and what it can do."""
    rng = t.rng
    cannot = rng.uniform() < 0.3
    frame = _side(CANNOT_DO if cannot else KNOWLEDGE, t.phrasing, rng, always=True)
    fill = {k: _pick(rng, v) for k, v in SLOTS.items()}
    if rng.uniform() < 0.5:  # names as people type them, capitalised
        fill.update({k: fill[k] if fill[k].startswith(("the ", "my ")) else fill[k].title()
                     for k in ("place", "person")})
    text = frame.format(**fill)
    t.human(roughen(_pick(rng, ("", "", "hey, ", "ok, ", "so ", "quick question: ", "hi, ")) + text
                    + _pick(rng, ("?", "?", "", "!", ".")), rng))
    t.gpt("capability", "outside", _pick(rng, CANNOT if cannot else DONT_KNOW) + CAPABILITIES)


# Questions asked indirectly (stage 10), as people wrap them: "do you know which way it goes?", "i'd like to know
# what colour you used". A wrapper and a clause in statement word order, or a wrapper and a noun phrase. The held-out
# questions of `QUESTIONS` and `OWN_QUESTIONS` all lead with "can you tell me" or with one fixed question, so that
# wrapper is left out and so is any combination that holds a held-out question (`_held_out_question`).
WRAPPERS = ("could you tell me", "do you know", "i want to know", "i'd like to know", "tell me", "any idea",
            "i wonder", "let me know", "can you say", "would you tell me", "i need to know", "please say",
            "could you check", "do you remember", "quick question:", "i'm curious")
NOUN_WRAPPERS = ("tell me", "i'd like", "i want", "what about", "please give", "could you give me", "can i get",
                 "i need", "just", "and")
CLAUSES = {
    "colour": ("what colour it is", "which colour the shape is", "what color {n} is", "what colour you see",
               "which colour it has", "what colour the thing in {n} is"),
    "colour_audio": ("which colour's note this is", "what colour {n} belongs to", "whose note this is",
                     "what colour this tone is", "which colour it sounds like"),
    "shape": ("what shape it is", "which shape {n} has", "what the shape is", "what kind of shape you see",
              "which shape is in {n}"),
    "position": ("where it is", "where the shape is", "which side it is on", "where in {n} the shape is",
                 "what part of the frame it is in", "whether it is on the left or the right"),
    "direction": ("which way it moves", "where it is going", "which direction it goes", "how it moves",
                  "where the shape goes", "which way the shape is moving in {n}"),
    "rhythm": ("whether it beeps", "if it is steady or beeping", "whether the tone is continuous",
               "if {n} pulses", "how the tone goes", "whether {n} is held or broken"),
    "describe": ("what this is", "what you see", "what {n} shows", "what is in {n}", "what's going on in {n}",
                 "what it is"),
    "describe_audio": ("what this sound is", "what you hear", "what {n} sounds like", "what is playing",
                       "what it is"),
}
NOUNS = {
    "colour": ("its colour", "the colour", "the colour of the shape", "the shape's colour"),
    "colour_audio": ("its colour", "the colour of {n}", "the note's colour"),
    "shape": ("its shape", "the shape", "the name of the shape"),
    "position": ("its position", "the position", "the shape's position", "its place in the frame"),
    "direction": ("its direction", "the direction", "the direction of the motion"),
    "rhythm": ("its rhythm", "the rhythm", "the rhythm of {n}"),
    "describe": ("a description", "a short description", "a quick description of {n}", "a summary of {n}"),
    "describe_audio": ("a description", "a short description", "a quick description of {n}"),
}
OWN_CLAUSES = {
    "colour": ("what colour you used", "which colour you picked", "what colour you made it",
               "what colour your shape is"),
    "colour_audio": ("which colour's note you played", "which colour you played", "what colour that tone was"),
    "shape": ("what shape you drew", "which shape you made", "what shape you used"),
    "position": ("where you put it", "where you drew it", "which side you put it on"),
    "direction": ("which way you made it move", "where your shape is going", "which direction you animated it"),
    "rhythm": ("whether you made it beep", "if your tone is steady", "whether that was steady or beeping"),
}


def _held_out_question(text: str) -> bool:
    """Whether `text` holds one of the held-out questions (about an item or to the model)."""
    return any(re.search(re.escape(q).replace(r"\{n\}", ".*"), text)
               for table in (QUESTIONS, OWN_QUESTIONS) for t in table.values() for q in t["held_out"])


def _medium_ref(modality: str, rng) -> str:
    """An item named by its medium, as a question names it: "this clip", "the picture"."""
    return _pick(rng, ("this ", "the ")) + _side(MEDIUM_NOUNS[modality], "in", rng)


def indirect_question(kind: str, modality: str, rng, own: bool = False) -> str:
    """A trained question asked indirectly: a wrapper and a clause ("do you know which way it moves"), or a wrapper
    and a noun phrase ("i'd like its colour"); `own`: about what the model made ("do you remember what shape you
    drew"). Never one that holds a held-out question."""
    noun = _medium_ref(modality, rng)
    while True:
        if own and kind in OWN_CLAUSES and rng.uniform() < 0.6:
            text = _pick(rng, WRAPPERS) + " " + _pick(rng, OWN_CLAUSES[kind])
        elif rng.uniform() < 0.7:
            text = _pick(rng, WRAPPERS) + " " + _pick(rng, CLAUSES[kind]).format(n=noun)
        else:
            text = _pick(rng, NOUN_WRAPPERS) + " " + _pick(rng, NOUNS[kind]).format(n=noun)
        if not _held_out_question(text):
            return text


def _indirect(t: _Talk) -> None:
    """An upload, or an item the model made, and one to three questions about it asked indirectly, or in other
    trained words; the held-out side asks in `QUESTIONS`' and `OWN_QUESTIONS`' held-out wording."""
    rng = t.rng
    if rng.uniform() < 0.4:
        _move(t, first=True)
    m = _pick(rng, MODALITIES)
    own = rng.uniform() < 0.45
    if own:
        _make(t, m)
        item = t.held[-1]
    else:
        item = t.upload(m, W.random_attributes(m, rng))
    for k in range(int(rng.integers(1, 4))):
        kind = _pick(rng, (*W.ATTRIBUTES[m], "describe"))
        qk = _question_kind(kind, m)
        to_model = own and kind != "describe"
        if t.phrasing == "in" and rng.uniform() < 0.75:
            q = indirect_question(qk, m, rng, own=to_model)
        else:
            table = OWN_QUESTIONS if to_model and rng.uniform() < 0.5 else ANY_QUESTIONS
            noun = _medium_ref(m, rng)
            q = _side(table[qk], t.phrasing, rng, always=True).format(n=noun)
        lead = _pick(rng, GREETINGS if k == 0 and not own else ("", "", "ok, ", "and ", "so ", "thanks! "))
        q = roughen(lead + q + _pick(rng, ("?", "?", "", ".")), rng)
        if to_model:
            t.human(q)
            t.gpt("answer", "own_question", answer(qk, item["attributes"], rng), asks=(kind,), about=item)
        else:
            _answer(t, item, kind, q, upload=not own and k == 0)


# Broad wording (stage 11): the trained phrases taken apart and put together in new orders and combinations, as
# people say them ("a clip of a star sliding over to the left, in red"), and questions, requests for two media and
# questions to the model in more words. Nothing here holds a held-out phrase (`held_out_text`): the held-out side
# stays unseen.
BROAD_MOVES = {
    "verbs": ("moving", "going", "heading", "sliding", "drifting", "gliding", "travelling", "traveling", "floating",
              "shifting", "rolling", "sailing", "running", "zooming", "creeping", "flying", "racing", "cruising",
              "wandering", "passing", "scooting", "that moves", "that goes", "that heads", "that slides",
              "that drifts", "that glides", "that travels", "that floats", "that rolls", "which moves", "as it moves"),
    "left": ("left", "to the left", "leftwards", "leftward", "over to the left", "off to the left",
             "across to the left", "to the left side", "left across the frame", "from right to left", "to the left-hand side"),
    "right": ("right", "to the right", "rightwards", "rightward", "over to the right", "off to the right",
              "across to the right", "to the right side", "right across the frame", "from left to right", "to the right-hand side"),
    "up": ("up", "upwards", "upward", "to the top", "towards the top", "up to the top", "up the frame",
           "from bottom to top", "skywards", "up and away", "to the top edge"),
    "down": ("down", "downwards", "downward", "to the bottom", "towards the bottom", "down to the bottom",
             "down the frame", "from top to bottom", "to the bottom edge", "down and away"),
    "alone": {"up": ("rising", "climbing", "ascending", "soaring", "lifting off", "rising up", "climbing upwards"),
              "down": ("falling", "sinking", "dropping", "descending", "plunging", "tumbling down", "dropping down")},
}
BROAD_SIDES = {
    "preps": ("on", "at", "to", "over on", "over at", "in", "near", "along", "by", "up against", "close to"),
    "left": ("the left", "the left side", "the left-hand side", "the left edge", "the left half", "the far left",
             "the left part", "the left of the image", "the left side of the canvas", "the left of the canvas"),
    "right": ("the right", "the right side", "the right-hand side", "the right edge", "the right half",
              "the far right", "the right part", "the right of the image", "the right side of the canvas",
              "the right of the canvas"),
    "centre": ("in the centre", "in the center", "in the middle", "at the centre", "at the center", "centred",
               "centered", "in the middle of the frame", "in the centre of the image", "right in the middle",
               "smack in the middle", "in the exact centre", "at the middle", "in the central part",
               "in the middle of the canvas", "in the center of the image", "right at the centre"),
}
BROAD_RHYTHM = {"steady": ("droning", "unwavering", "ongoing", "level", "lasting", "held", "sustained", "flat",
                           "even", "continuous", "constant", "steady", "smooth", "long", "unbroken", "stable"),
                "beeping": ("beepy", "bleepy", "chopped", "flickering", "throbbing", "blippy", "pulsing", "choppy",
                            "beeping", "intermittent", "pulsed", "staccato", "stuttering", "on-off", "broken",
                            "short")}
BROAD_RHYTHM_NOUNS = {"steady": ("tone", "note", "sound", "hum", "drone"),
                      "beeping": ("beeps", "pulses", "bursts", "blips", "bleeps")}
BROAD_NOUNS = {"image": (("still", "painted", "drawn", "simple", "little", "small", "quick", "digital", "flat", "nice",
                          "colour", "color"), ("picture", "image", "drawing", "painting", "sketch", "illustration",
                                               "pic", "artwork", "graphic")),
               "video": (("short", "animated", "little", "quick", "moving", "tiny", "brief", "small", "simple"),
                         ("video", "clip", "film", "movie", "animation", "cartoon", "footage", "gif", "video clip",
                          "movie clip", "animation clip")),
               "audio": (("short", "little", "quick", "simple", "pure", "musical", "single", "clear", "soft"),
                         ("tone", "note", "sound", "beep", "hum", "chime", "sound clip", "audio clip", "pitch"))}
BROAD_OBJECTS = {
    "image": ("{a} {c} {s} {pos}", "{a} {s} in {c} {pos}", "{a} {s} {pos} in {c}", "{a} {c} {s}, {pos}",
              "{a} {s} coloured {c} {pos}", "{a} {s} colored {c}, {pos}", "{pos}, {a} {c} {s}",
              "{a} {c}-coloured {s} {pos}", "{a} {c} {s} positioned {pos}", "{a} {c} {s} located {pos}",
              "{a} {s} in the colour {c} {pos}", "{a} {s} with a {c} colour {pos}", "{a} {c} {s} shape {pos}",
              "{a} {s} that is {c}, placed {pos}", "{a} {c} {s} drawn {pos}", "{a} {s}, all {c}, {pos}"),
    "video": ("{a} {c} {s} {dir}", "{a} {s} in {c} {dir}", "{a} {s} {dir} in {c}", "{a} {c} {s}, {dir}",
              "{a} {s} coloured {c}, {dir}", "{a} {c}-coloured {s} {dir}", "{a} {s} that is {c}, {dir}",
              "{a} {c} {s} that keeps {dir}", "{a} {s} in the colour {c} {dir}", "{a} {s} with a {c} colour {dir}",
              "{a} {c} {s} shape {dir}", "{a} {s}, all {c}, {dir}", "{a} {c} {s} slowly {dir}"),
    "audio": ("{a} {r} {c} tone", "{a} {r} tone of {c}", "the {c} note, {rr}", "the note of {c} {rr}",
              "{a} {c} note that is {r}", "{a} {r} sound in {c}", "{c}'s tone, {r}", "{a} {r} {c} sound",
              "{c}'s {r} note", "{a} {r} hum of {c}", "the tone of {c}, {rr}", "{a} {r} note in {c}",
              "the {c} sound, played {rr}", "{a} {c} tone played {rr}", "the {c} note played {rr}",
              "{a} {r} {c} note", "the sound of {c} {rr}", "{c}, {rr}", "{a} {r} tone in the colour {c}"),
}
BROAD_FRAMES = {
    "image": {"leads": ("draw", "paint", "sketch", "show me", "show", "render", "illustrate", "create", "make",
                        "make me", "give me", "generate", "produce", "design", "draw me", "paint me", "do",
                        "i want", "i'd like", "i need", "can i have", "could i have", "may i have", "can i get",
                        "i would like", "i'm hoping for", "how about", "i want to see", "i'd like to see",
                        "can i see", "i wanna see", "i would like to see", "please make"),
              "bodies": ("{o}", "{o}", "{n} of {o}", "{n} showing {o}", "{n} with {o}", "{n} that shows {o}",
                         "{n} featuring {o}", "{n} containing {o}", "{n} of {o} for me")},
    "video": {"leads": ("animate", "film", "record", "make", "create", "generate", "render", "produce", "show me",
                        "give me", "make me", "i want", "i'd like", "i need", "can i have", "could i have",
                        "can i get", "i'd like to watch", "i want to watch", "can i watch", "i wanna watch",
                        "i would like", "how about", "please make"),
              "bodies": ("{o}", "{n} of {o}", "{n} of {o}", "{n} showing {o}", "{n} with {o}", "{n} where we see {o}",
                         "{n} featuring {o}", "{n} that shows {o}")},
    "audio": {"leads": ("play", "play me", "let me hear", "i want to hear", "can i hear", "i wanna hear", "sound",
                        "hum", "make", "generate", "create", "produce", "give me", "get me", "i need", "i want",
                        "can i have", "could you play", "could i have", "may i hear", "i would like to hear",
                        "please play", "go ahead and play"),
              "bodies": ("{o}", "{o}", "{o}", "{n}: {o}", "{n}, {o}")},
}
BROAD_QUESTIONS = {
    "colour": ("what colour is the thing", "which colour does it have", "what shade is it", "what hue is the shape",
               "which color is the shape", "what colour are we looking at", "what colour is shown",
               "what colour does {n} have", "what's the shape's colour", "which colour has the shape got",
               "what colour is the shape in it", "colour of the shape?", "how is it coloured", "is it blue or what",
               "what colour is this one"),
    "colour_audio": ("which colour does this tone belong to", "whose tone is it", "what colour goes with it",
                     "which colour is {n}", "what colour does this note match", "which colour's sound is it",
                     "what colour would you say this is", "which colour plays this note", "whose sound is this",
                     "which colour's tone is this one"),
    "shape": ("what sort of shape is it", "which shape is this", "what shape are we looking at", "what's this shape",
              "which shape does it show", "what form is it", "which shape is shown in {n}", "what shape is the thing",
              "is it a star or what", "shape of the thing?", "what shape have we got", "which shape is in it"),
    "position": ("whereabouts is it", "where is the shape placed", "where's it sitting", "where is it located",
                 "what side is the shape on", "which part of {n} is it in", "where does it appear in {n}",
                 "where exactly is the shape", "is the shape left, right or in the middle", "where is it positioned",
                 "where's the thing", "which half is it in", "where did the shape land"),
    "direction": ("which way is it going", "where is it heading", "where's it heading", "what direction is it going",
                  "which way does the shape travel", "where is the shape headed", "which direction is it heading in",
                  "what way is it moving", "which way does it drift", "is it going up, down, left or right",
                  "which way is it travelling", "where is the shape moving to", "what's the direction",
                  "where does the thing go", "which way does {n} move"),
    "rhythm": ("is it beeping or steady", "is {n} continuous", "is the sound broken up", "does it go on and off",
               "is it one long tone", "is the tone steady or choppy", "how does {n} go", "what kind of rhythm is it",
               "is it held or beeping", "is the note steady", "does it stop and start", "steady or pulsing?",
               "does the tone have gaps", "is it a long note or beeps"),
    "describe": ("what have you got here", "what do you make of {n}", "describe what's in {n}", "what is shown in {n}",
                 "what can you see", "what's in it", "summarise {n}", "describe {n} for me", "what does it look like",
                 "what's happening here", "talk me through {n}", "what are we looking at", "what's on {n}",
                 "explain what you see", "what is going on"),
    "describe_audio": ("what can you hear", "describe what you hear", "what kind of sound is this",
                       "what's playing", "what am i listening to", "describe {n} for me", "what's the sound",
                       "what is this noise", "what do you make of {n}", "what does it sound like to you"),
}
BROAD_OWN = {
    "colour": ("which colour did you go for", "what colour did you draw it in", "what colour is the one you made",
               "which colour did you use for it", "what colour did you paint it", "what colour is yours"),
    "colour_audio": ("which colour's note was that", "what colour did you play", "whose note did you play",
                     "which colour was your tone"),
    "shape": ("what shape did you make", "which shape did you draw", "what shape is yours", "which shape was it"),
    "position": ("where did you put the shape", "which side is your shape on", "where did you place it",
                 "where is the shape you drew"),
    "direction": ("which way does yours go", "where did you send the shape", "which way is your shape moving",
                  "which direction does it go in your video"),
    "rhythm": ("did you make it steady or beeping", "is your note beeping", "was your tone held",
               "did your tone beep"),
    "describe": ("what did you just make", "what did you make", "describe what you made", "what did you draw",
                 "tell me about what you made", "what is it you made", "describe your {m}", "what's in your {m}",
                 "what was that", "what did you just do", "what's that you made", "explain what you made"),
}
BROAD_OWN_NOUNS = {"image": ("picture", "drawing", "image"), "video": ("video", "clip", "animation"),
                   "audio": ("sound", "tone", "note")}
BROAD_TWO = {  # the second medium of two, after the first's request: {o2} its words
    "audio": ("and play its note", "and play its {r} note", "and let me hear its colour as a {r} tone",
              "and give me its sound, {rr}", "plus its {r} tone", "and also its note, {rr}",
              "and a {r} tone of its colour", "with its {r} sound", "then play how it sounds, {rr}",
              "and its note too", "and play it as a sound", "and then play its colour, {rr}",
              "and make a {r} sound of it"),
    "video": ("then make a video of it {dir}", "and animate it {dir}", "then make it move {dir}",
              "and a clip of it {dir}", "then film it {dir}", "and also animate it", "then animate it {dir}",
              "and make a video where it goes {dway}", "and then a video of it {dir}"),
}
BROAD_PAIRS = (("image", "audio"), ("video", "audio"), ("image", "video"))
# Questions about an item of the conversation by reference ({ref}: "the first picture", "it"), made or uploaded.
RECALL_QUESTIONS = {
    "colour": {"train": ("what colour was {ref}", "which colour is {ref}", "what colour did {ref} have",
                         "what colour is {ref} again", "remind me, what colour was {ref}", "what was the colour of {ref}",
                         "which colour did {ref} have"),
               "held_out": ("what colour had {ref} got", "which shade was {ref}")},
    "colour_audio": {"train": ("which colour's note was {ref}", "whose note was {ref}", "what colour was {ref}",
                               "which colour does {ref} belong to", "which colour was {ref} again"),
                     "held_out": ("whose colour did {ref} sound like",)},
    "shape": {"train": ("what shape was {ref}", "which shape is in {ref}", "what shape did {ref} have",
                        "what was the shape in {ref}", "remind me, which shape was {ref}"),
              "held_out": ("which figure was in {ref}",)},
    "position": {"train": ("where was the shape in {ref}", "which side is {ref} on", "where is the shape in {ref}",
                           "where was {ref} placed", "what side was {ref} on"),
                 "held_out": ("on what side did {ref} sit",)},
    "direction": {"train": ("which way does {ref} go", "where was {ref} heading", "which way did {ref} move",
                            "what direction does {ref} go in", "where does the shape in {ref} go"),
                  "held_out": ("in what direction did {ref} travel",)},
    "rhythm": {"train": ("was {ref} steady or beeping", "does {ref} beep", "is {ref} steady", "did {ref} beep",
                         "was {ref} one long tone"),
               "held_out": ("did {ref} come in pulses",)},
    "describe": {"train": ("describe {ref}", "what was {ref} again", "what was in {ref}", "tell me about {ref}",
                           "remind me what {ref} was", "what did {ref} show", "describe {ref} again"),
                 "held_out": ("give me a recap of {ref}", "sum up {ref}")},
    "describe_audio": {"train": ("describe {ref}", "what was {ref} again", "tell me about {ref}",
                                 "remind me what {ref} was", "how did {ref} sound", "describe {ref} again"),
                       "held_out": ("give me a recap of {ref}", "sum up {ref}")},
}
# Asking the model to describe what it just made: in any medium's words, or in the words of the medium it made.
OWN_DESCRIBE = {
    "train": ("what did you just make", "what did you make", "describe what you made", "tell me about what you made",
              "what is it you made", "what was that", "what's that you made", "explain what you made",
              "describe your {m}", "what's in your {m}", "what did you come up with", "what have you made",
              "describe it for me", "what did you just do", "what is that", "describe what you just made"),
    "held_out": ("sum up what you made", "what exactly did you produce", "walk me through your {m}"),
    "image": ("what did you draw", "what did you paint", "what's in the picture you drew", "what did you sketch",
              "what did you just draw"),
    "video": ("what did you animate", "what happens in your video", "what's in the clip you made", "what did you film",
              "what's going on in your video"),
    "audio": ("what did you play", "what does your sound sound like", "what did you just play",
              "describe the sound you made", "what's the sound you made"),
}


def phrase_pattern(phrase: str) -> re.Pattern:
    """A table's phrase as a regular expression in which each slot matches any words."""
    return re.compile(re.sub(r"\\\{\w+\\\}", ".+?", re.escape(phrase)))


@functools.cache
def _held_out_patterns() -> tuple:
    """Every held-out phrase of the grammar with enough of its own words to be told apart, as regular expressions
    (a slot matches any words)."""
    phrases = set()

    def walk(x):
        if isinstance(x, dict):
            for k, v in x.items():
                if k == "held_out":
                    phrases.update(p[0] if isinstance(p, tuple) else p for p in v)
                else:
                    walk(v)

    for table in (POSITION_WORDS, MOVE_WORDS, RHYTHM_ADJ, RHYTHM_ADV, MEDIUM_NOUNS, OBJECTS, FRAMES, QUESTIONS,
                  CROSS, PLAIN_OBJECTS, OWN_QUESTIONS, GENERAL, SMALL_TALK, NOTHING_ASKS, SHORT_FRAMES, REFER,
                  REFER_FROM_SOUND, PLAIN_EDITS, OUTSIDE_EDITS, KNOWLEDGE, CANNOT_DO):
        walk(table)
    out = []
    for p in phrases:
        if len(re.sub(r"\{\w+\}", "", p).strip(" ,:")) >= 8:
            out.append(phrase_pattern(p))
    return tuple(out)


def held_out_text(text: str) -> bool:
    """Whether `text` holds a held-out phrase of any table (the broad wording must not)."""
    text = text.lower()
    return any(p.search(text) for p in _held_out_patterns())


def _broad_words(attrs: dict, rng) -> dict:
    """Broad words for an item's attributes, the trained ones among them."""
    slots = _words("video" if "direction" in attrs else "image", attrs, "in", rng)
    if "position" in attrs:
        pos = attrs["position"]
        slots["pos"] = _pick(rng, BROAD_SIDES["centre"]) if pos == "centre" else \
            f"{_pick(rng, BROAD_SIDES['preps'])} {_pick(rng, BROAD_SIDES[pos])}"
    if "direction" in attrs:
        d = attrs["direction"]
        alone = BROAD_MOVES["alone"].get(d, ())
        slots["dway"] = _pick(rng, BROAD_MOVES[d])
        verb = _pick(rng, BROAD_MOVES["verbs"])
        while verb == "gliding" and slots["dway"].startswith("towards"):  # "gliding towards" is held out
            verb = _pick(rng, BROAD_MOVES["verbs"])
        slots["dir"] = _pick(rng, alone) if alone and rng.uniform() < 0.25 else f"{verb} {slots['dway']}"
    if "rhythm" in attrs:
        r = attrs["rhythm"]
        words = BROAD_RHYTHM[r]
        slots["r"] = _pick(rng, words) if rng.uniform() < 0.7 else \
            f"{_pick(rng, words)}{_pick(rng, (' and ', ', '))}{_pick(rng, words)}"
        noun = _pick(rng, BROAD_RHYTHM_NOUNS[r])
        slots["rr"] = _side(RHYTHM_ADV[r], "in", rng) if rng.uniform() < 0.5 else \
            (f"as one {_pick(rng, words)} {noun}" if r == "steady" else f"in {_pick(rng, words)} {noun}")
    if "colour" in attrs and rng.uniform() < 0.15:
        slots["c"] = _pick(rng, COLOUR_WORDS[attrs["colour"]])
    return slots


def _broad_noun(modality: str, rng) -> str:
    adjectives, nouns = BROAD_NOUNS[modality]
    noun = _pick(rng, nouns)
    return f"{_pick(rng, adjectives)} {noun}" if rng.uniform() < 0.35 else noun


def broad_request(modality: str, attrs: dict, rng, named: set | None = None, swap: dict | None = None,
                  ending: bool = True) -> str:
    """A request in broad wording (as `request`; `ending`: with a closing word or mark), drawn again until it holds
    no held-out phrase."""
    while True:
        f = BROAD_FRAMES[modality]
        body = _pick(rng, f["bodies"])
        if modality == "video" and named is not None and "direction" not in named and "{n}" not in body:
            body = "{n} of {o}"
        frame = f"{_pick(rng, f['leads'])} {body}"
        slots = _broad_words(attrs, rng) | (swap or {})
        obj = _fill(_pick(rng, BROAD_OBJECTS[modality]), slots, rng) if named is None else \
            partial_object(modality, attrs, named, "in", rng, swap)
        noun = _broad_noun(modality, rng)
        text = frame.format(o=(swap or {}).get("o", obj), n=f"{_article(noun)} {noun}")
        text = roughen(_prefix(frame, rng) + text + (_pick(rng, SUFFIXES) if ending else ""), rng)
        if not held_out_text(text):
            return text


def _broad_make(t: _Talk, modality: str) -> None:
    attrs = W.random_attributes(modality, t.rng)
    named = None if t.rng.uniform() < 0.75 else _named(modality, t.rng)
    if named is not None:
        _defaults_for_rest(modality, attrs, named)
    _make(t, modality, attrs, broad_request(modality, attrs, t.rng, named))


def _broad_two(t: _Talk) -> None:
    """Two media in one answer, asked in broad words, often briefly ("draw a red star and play its note")."""
    rng = t.rng
    a, b = _pick(rng, BROAD_PAIRS)
    first = W.random_attributes(a, rng)
    named = None if rng.uniform() < 0.6 else _named(a, rng)
    if named is not None:
        _defaults_for_rest(a, first, named)
    second = {**W.random_attributes(b, rng), "colour": first["colour"]}
    if "shape" in second:
        second["shape"] = first["shape"]
    while True:
        tail = _pick(rng, BROAD_TWO[b])
        if "{" not in tail or tail.endswith("it"):  # nothing named: the default
            second[TAIL[b]] = DEFAULTS[TAIL[b]]
        text = broad_request(a, first, rng, named, ending=False) + _pick(rng, (" ", ", ", " ")) + \
            tail.format(**_broad_words(second, rng))
        text = roughen(text + _pick(rng, SHORT_ENDS), rng)
        if not held_out_text(text):
            break
    t.human(text)
    t.gpt("media", "two_media", say_made(a, first, rng),
          [(a, first, ""), (b, second, SECOND_LEAD[b].format(**answer_words(second)))])


def _broad_ask(t: _Talk, item: dict, upload: bool) -> None:
    """A question about `item` in broad words; about what the model made, often asked of the model."""
    rng = t.rng
    m = item["modality"]
    kind = _pick(rng, (*W.ATTRIBUTES[m], "describe"))
    qk = _question_kind(kind, m)
    own = item.get("made") and not upload and rng.uniform() < 0.5
    while True:
        if own:
            table = BROAD_OWN["describe" if kind == "describe" else qk]
            q = _pick(rng, table).format(m=_pick(rng, BROAD_OWN_NOUNS[m]))
        else:
            q = _pick(rng, BROAD_QUESTIONS[qk]).format(n=_pick(rng, ("this ", "the ")) + _broad_noun(m, rng))
        q = roughen(_pick(rng, ("", "", "ok, ", "and ", "so ", "hey, ")) + q + _pick(rng, ("?", "?", "", ".")), rng)
        if not held_out_text(q):
            break
    if not own:
        return _answer(t, item, kind, q, upload)
    reply = describe(m, item["attributes"], rng) if kind == "describe" else answer(qk, item["attributes"], rng)
    t.human(q)
    t.gpt("answer", "own_question", reply, asks=W.ATTRIBUTES[m] if kind == "describe" else (kind,), about=item)


def _broad_outside(t: _Talk) -> None:
    """A request in broad words for something nano cannot make."""
    rng = t.rng
    m = _pick(rng, MODALITIES)
    attrs, named, swap = _outside_draw(m, rng)
    t.human(broad_request(m, attrs, rng, named, swap))
    t.gpt("capability", "outside", _pick(rng, CANNOT) + CAPABILITIES)


def _broad(t: _Talk) -> None:
    """A conversation of two to five turns in broad wording: new requests (one medium or two), questions about an
    upload or about what the model made, edits by reference, items taken into another medium, and requests and
    questions outside the world. The held-out side asks in the held-out wording instead."""
    rng = t.rng
    broad = t.phrasing == "in"
    for k in range(int(rng.integers(2, 6))):
        held = [h for h in t.held if h.get("attributes")]
        u = rng.uniform()
        if not held or u < 0.25:
            v = rng.uniform()
            m = _pick(rng, MODALITIES)
            if v < 0.55:
                _broad_make(t, m) if broad else _make(t, m)
            elif v < 0.75:
                _broad_two(t) if broad else _two(t)
            else:
                item = t.upload(m, W.random_attributes(m, rng))
                _broad_ask(t, item, upload=True) if broad else _ask(t, item, upload=True)
        elif u < 0.45:
            _broad_ask(t, held[-1], upload=False) if broad else _ask(t, held[-1], upload=False)
        elif u < 0.62:
            item = held[-1] if rng.uniform() < 0.6 else _pick(rng, held)
            _edit(t, item) if rng.uniform() < 0.5 else _plain_edit(t, item)
        elif u < 0.7:
            _refer_to(t, held[-1])
        elif u < 0.8:
            _broad_two(t) if broad else _two(t)
        elif u < 0.92:
            _broad_outside(t) if broad else _outside(t)
        else:
            _general(t) if rng.uniform() < 0.5 else _knowledge_turn(t)


def _recall_new(t: _Talk) -> None:
    """A new item for the recall task to come back to: made (one medium or two) or uploaded and asked about; in
    the in-distribution split half of the requests and questions are in broad words. Pictures come most often."""
    rng = t.rng
    broad = t.phrasing == "in" and rng.uniform() < 0.5
    u = rng.uniform()
    if u < 0.6:
        m = _pick(rng, MODALITIES)
        _broad_make(t, m) if broad else _make(t, m)
    elif u < 0.75:
        _broad_two(t) if broad else _two(t)
    else:
        m = _pick(rng, ("image", "image", "video", "audio"))
        item = t.upload(m, W.random_attributes(m, rng))
        _broad_ask(t, item, upload=True) if broad else _ask(t, item, upload=True, questions=ANY_QUESTIONS)


def _recall_ask(t: _Talk, item: dict) -> None:
    """A question about an item of the conversation: of the model, about what it just made ("what did you just
    make?", in that medium's words too), or about any item by reference ("what colour was the first picture?")."""
    rng = t.rng
    m, attrs = item["modality"], item["attributes"]
    kind = _pick(rng, (*W.ATTRIBUTES[m], "describe", "describe", "describe"))
    qk = _question_kind(kind, m)
    if item is t.held[-1] and item.get("made") and rng.uniform() < 0.7:
        table = {"train": OWN_DESCRIBE["train"] + OWN_DESCRIBE[m], "held_out": OWN_DESCRIBE["held_out"]} \
            if kind == "describe" else OWN_QUESTIONS[qk]
        q = _side(table, t.phrasing, rng, always=True).format(m=_pick(rng, BROAD_OWN_NOUNS[m]))
    else:
        q = _side(RECALL_QUESTIONS[qk], t.phrasing, rng, always=True).format(ref=_refer(t, item))
    t.human(roughen(_pick(rng, ("", "", "ok, ", "and ", "so ", "wait, ", "hey, ")) + q
                    + _pick(rng, ("?", "?", "", ".")), rng))
    reply = describe(m, attrs, rng) if kind == "describe" else answer(qk, attrs, rng)
    t.gpt("answer", "own_question" if item.get("made") else "upload_question", reply,
          asks=W.ATTRIBUTES[m] if kind == "describe" else (kind,), about=item)


def _recall(t: _Talk, exchanges: tuple[int, int] = (3, 6), latest: float = 0.4, aside: float = 0.0) -> None:
    """Three to six turns that keep coming back to earlier items: two are made or uploaded first, then edits of
    the latest or an earlier one (always named when it is not the latest: `_Talk.exact`), questions about them and
    to the model about what it made, items taken into another medium, corrections and new items. `latest` is the
    chance that an edit or reference is about the latest item (a question's is 0.2 more); `aside`, that a turn
    after the first two items is about something outside the world instead (general knowledge, chat, a request nano
    cannot make), which it answers in text alone."""
    rng = t.rng
    for k in range(int(rng.integers(exchanges[0], exchanges[1] + 1))):
        held = [h for h in t.held if h.get("attributes")]
        if not held or (len(held) < 2 and k < 2):
            _recall_new(t)
            continue
        if aside and rng.uniform() < aside:
            _pick(rng, (_knowledge_turn, _general, _outside, _small_talk))(t)
            continue
        u = rng.uniform()
        item = held[-1] if rng.uniform() < latest + (0.2 if 0.4 <= u < 0.62 else 0) else _pick(rng, held[:-1])
        if u < 0.4:
            _edit(t, item) if rng.uniform() < 0.5 else _plain_edit(t, item)
        elif u < 0.62:
            _recall_ask(t, item)
        elif u < 0.74:
            _refer_to(t, item)
        elif u < 0.8 and t.turns[-1]["kind"] == "media":
            _correct(t)
        else:
            _recall_new(t)


def _revisit(t: _Talk) -> None:
    """The recall task, longer (four to six turns) and mostly about earlier items: three edits or references in
    four name an item other than the latest, which is what nano most often gets wrong. A turn in four after the
    first two items is outside the world, so that a question after a few items is not always about them."""
    _recall(t, exchanges=(4, 6), latest=0.25, aside=0.25)


# The follow-ups train in stage 6 only (`NanoStages`).
FOLLOW_UPS = ("defaults", "followup", "asks", "general")
# Plain talk trains in stage 7 alone (`NanoStages`).
PLAIN_TALK = {"short": lambda t: [_short(t) for _ in range(int(t.rng.integers(1, 4)))],
              "refer": lambda t: _plain_talk(t, _refer_to), "edits": lambda t: _plain_talk(t, _plain_edit),
              "any_upload": _any_upload, "knowledge": _knowledge}
TALK_TASKS = ("single", "conversation", "outside", "foreign_upload", "small_talk", *FOLLOW_UPS, *PLAIN_TALK,
              "indirect", "broad", "recall", "revisit", "late_upload")
# task -> (exchange, chance of one before, chance of one after, whether the one after starts afresh)
_EDGES = {"outside": (_outside, 0.4, 0.5, False), "foreign_upload": (_foreign_upload, 0.3, 0.4, True),
          "defaults": (_defaults, 0.3, 0.3, False), "general": (_general, 0.4, 0.4, False)}


def _dialogue(index: int, split: str, phrasing: str, task: str, rng, pools) -> dict:
    t = _Talk(index, split, phrasing, rng, pools, exact=task in ("recall", "revisit"))
    if task == "small_talk":  # alone, before an ordinary exchange, or after one
        u = rng.uniform()
        if u < 0.35:
            _move(t, first=True)
        _small_talk(t)
        if u >= 0.35 and rng.uniform() < 0.5:
            _move(t, first=True)
    elif task == "single":
        _move(t, first=True)
    elif task == "followup":
        _followup(t)
    elif task == "asks":
        _asks(t)
    elif task in PLAIN_TALK:
        PLAIN_TALK[task](t)
    elif task == "indirect":
        _indirect(t)
    elif task == "broad":
        _broad(t)
    elif task == "recall":
        _recall(t)
    elif task == "revisit":
        _revisit(t)
    elif task == "late_upload":
        _late_upload(t)
    elif task in _EDGES:  # the edge of the world, maybe after and before an ordinary exchange
        edge, before, after, fresh = _EDGES[task]
        if rng.uniform() < before:
            _move(t, first=True)
        edge(t)
        if rng.uniform() < after:
            _move(t, first=fresh)
    else:
        for k in range(int(rng.integers(2, 7))):
            _move(t, first=k == 0)
    return t.record(task)


def stand_in_pools(seed: int = 0) -> dict:
    """Pools without files: every attribute combination as one named, captioned item, one foreign item each."""
    import itertools

    pools: dict = {"world": {}, "plain": {}, "varied": {}, "foreign": {}}
    for m in MODALITIES:
        names = W.ATTRIBUTES[m]
        for k, values in enumerate(itertools.product(*(W.VALUES[a] for a in names))):
            attrs = dict(zip(names, values))
            item = {"modality": m, "name": f"{m}_{k:04d}.{W.EXTENSIONS[m]}", "attributes": attrs,
                    "caption": W.caption(m, attrs, np.random.default_rng([seed, 11, MODALITIES.index(m), k]))}
            pools["world"][(m, values)] = pools["plain"][(m, values)] = [item]
        pools["foreign"][m] = [{"modality": m, "name": f"foreign_{m}.{W.EXTENSIONS[m]}", "attributes": None,
                                "caption": f"a {m} that is not from the nano world"}]
    return pools


def text_dialogues(seed: int, n: int, phrasing: str = "in", small_talk: float = 0.08) -> list[dict]:
    """n talk dialogues with stand-in media (names and captions, no files): in train phrasings, LLM-nano's
    pretraining text, so the base model already knows how people ask before the stages teach it the media."""
    pools = stand_in_pools(seed)
    tasks = [*TASK_SHARES, "small_talk"]
    shares = np.array([*(TASK_SHARES[k] * (1 - small_talk) for k in TASK_SHARES), small_talk])
    records = []
    for i in range(n):
        rng = np.random.default_rng([seed, 12, i])
        task = tasks[int(rng.choice(len(tasks), p=shares / shares.sum()))]
        records.append(_dialogue(i, "train", phrasing, task, rng, pools))
    return records


# --- writing ---------------------------------------------------------------------------------------------------

def _world_pool(world_dir: Path, split: str) -> dict:
    """The world's pair items of a split by (modality, attribute values)."""
    items = json.loads((world_dir / "world.json").read_text())["items"]
    pool: dict = {}
    for it in items:
        if it["source"] == "pairs" and it["split"] == split:
            key = (it["modality"], tuple(it["attributes"][a] for a in W.ATTRIBUTES[it["modality"]]))
            pool.setdefault(key, []).append({k: it[k] for k in ("modality", "name", "caption", "attributes")})
    return pool


def _render_pools(world_dir: Path, split: str, seed: int, counts: dict, log) -> dict:
    """Varied world uploads and foreign uploads of a split, written once under the world's media folders."""
    varied, foreign = {}, {m: [] for m in MODALITIES}
    made = 0
    for m in MODALITIES:
        for k in range(counts["varied"][m]):
            rng = np.random.default_rng([seed, 7, W.SPLITS.index(split), MODALITIES.index(m), k])
            attrs = W.random_attributes(m, rng)
            if m == "image":
                data, ext = upload_image(attrs, rng)
                rate = int(rng.integers(55, 96))  # JPEG quality
            elif m == "video":
                (data, rate), ext = upload_video(attrs, rng), "mp4"
            else:
                (data, rate), ext = upload_sound(attrs, rng), "wav"
            name = f"talk_{split}_{m[0]}_{k:05d}.{ext}"
            path = world_dir / W.FOLDERS[m] / name
            if not path.exists():
                _write(path, m, data, rate)
                made += 1
            key = (m, tuple(attrs[a] for a in W.ATTRIBUTES[m]))
            varied.setdefault(key, []).append({"modality": m, "name": name, "attributes": attrs,
                                               "caption": W.caption(m, attrs, rng)})
        for k in range(counts["foreign"][m]):
            rng = np.random.default_rng([seed, 8, W.SPLITS.index(split), MODALITIES.index(m), k])
            data, rate = (foreign_image(rng), None) if m == "image" else foreign_video(rng) if m == "video" \
                else foreign_sound(rng)
            name = f"talk_{split}_foreign_{m[0]}_{k:05d}.{W.EXTENSIONS[m]}"
            path = world_dir / W.FOLDERS[m] / name
            if not path.exists():
                _write(path, m, data, rate)
                made += 1
            foreign[m].append({"modality": m, "name": name, "attributes": None,
                               "caption": f"a {m} that is not from the nano world"})
    log(f"{split}: {made} upload files written")
    return {"varied": varied, "foreign": foreign}


# Small talk trains from stage 4 on, which LLM-nano's pretraining on talk text prepares (a short stage after the
# talk stages, on a model pretrained without it, garbled the replies' openings: docs/nano.md).
DEFAULT_COUNTS = {
    "train": {"dialogues": 16000, "small_talk": 1500, "defaults": 3000, "followup": 2500, "asks": 2500,
              "general": 1500, "short": 4000, "refer": 3000, "edits": 3000,
              "any_upload": 3000, "knowledge": 2000, "indirect": 3000, "broad": 4000, "recall": 4000,
              "revisit": 4000, "late_upload": 4000,
              "varied": {"image": 1500, "video": 500, "audio": 700},
              "foreign": {"image": 500, "video": 150, "audio": 250}},
    "test": {"dialogues": 1200, "small_talk": 120, "defaults": 120, "followup": 120, "asks": 120,
             "general": 120, "short": 120, "refer": 120, "edits": 120, "any_upload": 120, "knowledge": 120,
             "indirect": 120, "broad": 120, "recall": 120, "revisit": 120, "late_upload": 120,
             "varied": {"image": 150, "video": 60, "audio": 80},
             "foreign": {"image": 60, "video": 25, "audio": 35}},
}
TASK_SHARES = {"single": 0.45, "conversation": 0.35, "outside": 0.12, "foreign_upload": 0.08}
# Tasks written after those of TASK_SHARES, each from its own random stream, so adding one leaves the others as
# they were (stage 6 trains on the follow-ups that stages 4 and 5 leave out: `NanoStages`).
APPENDED_TASKS = {"small_talk": 10, "defaults": 13, "followup": 14, "asks": 15, "general": 16, "short": 17,
                  "refer": 18, "edits": 19, "any_upload": 20, "knowledge": 21, "indirect": 22, "broad": 23,
                  "recall": 24, "revisit": 25, "late_upload": 26}


def generate(world_dir, seed: int = 0, counts: dict | None = None, log=print) -> dict:
    """Write `{split}/talk.json` and the upload media into an existing world; returns the counts written."""
    world_dir = Path(world_dir)
    counts = counts or DEFAULT_COUNTS
    written = {}
    for split, c in counts.items():
        # made items stand for decoder outputs (the world's train items); uploads are the split's own items
        pools = {"world": _world_pool(world_dir, "train"), "plain": _world_pool(world_dir, split),
                 **_render_pools(world_dir, split, seed, c, log)}
        records = []
        tasks = list(TASK_SHARES)
        shares = np.array([TASK_SHARES[k] for k in tasks])
        for i in range(c["dialogues"]):
            rng = np.random.default_rng([seed, 9, W.SPLITS.index(split), i])
            phrasing = "in" if split == "train" or i % 2 == 0 else "held_out"
            task = tasks[int(rng.choice(len(tasks), p=shares / shares.sum()))]
            records.append(_dialogue(i, split, phrasing, task, rng, pools))
        for task, stream in APPENDED_TASKS.items():  # after the others, each from its own random stream
            for i in range(c.get(task, 0)):
                rng = np.random.default_rng([seed, stream, W.SPLITS.index(split), i])
                phrasing = "in" if split == "train" or i % 2 == 0 else "held_out"
                records.append(_dialogue(len(records), split, phrasing, task, rng, pools))
        (world_dir / split).mkdir(exist_ok=True)
        (world_dir / split / "talk.json").write_text(json.dumps(records, indent=1, ensure_ascii=False) + "\n")
        written[split] = len(records)
        log(f"{split}: {len(records)} dialogues")
    return written


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m nextgpt.nano.talk", description=__doc__.split("\n\n")[0])
    p.add_argument("world_dir")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    generate(a.world_dir, a.seed)


if __name__ == "__main__":
    main()
