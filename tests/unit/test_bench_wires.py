"""The relay generator's wires: the frames and NATS messages its loop counts and answers."""

from __future__ import annotations

import orjson

from mc.bench.gen import stamp
from mc.bench.natsgen import MsgParser
from mc.bench.wsclient import ChatFrames
from mc.websocket import OP_CLOSE, OP_PING, OP_PONG, OP_TEXT, FrameParser, encode_frame

CHAT = orjson.dumps({"type": "chat", "from": "a1", "data": f"{1234:019d}" + "x" * 81, "seq": 7, "ts": 1})


def test_chat_frames_keep_chat_payloads_and_count_the_others() -> None:
    w = ChatFrames()
    stream = encode_frame(OP_TEXT, b'{"type":"joined","client":"b1"}') + encode_frame(OP_TEXT, CHAT) * 2
    assert w.feed(stream) == [CHAT, CHAT]
    assert w.others == 1
    assert w.size == len(encode_frame(OP_TEXT, CHAT)) and w.size > len(CHAT) + 2  # 126: a 4-byte header
    assert encode_frame(OP_TEXT, CHAT).startswith(w.mark) and len(w.mark) == 4
    assert stamp(CHAT) == 1234


def test_chat_frames_resume_a_frame_split_across_reads() -> None:
    w = ChatFrames()
    frame = encode_frame(OP_TEXT, CHAT)
    for cut in (1, 3, len(frame) - 1):
        assert w.feed(frame[:cut]) == [] and w.buf
        assert w.feed(frame[cut:] + frame) == [CHAT, CHAT] and w.buf == b""


def test_chat_frames_owe_a_pong_per_ping_and_note_a_close() -> None:
    w = ChatFrames()
    w.feed(encode_frame(OP_PING, b"hb") + encode_frame(OP_CLOSE, b"\x03\xe8"))
    assert FrameParser(expect_masked=True).feed(w.owed) == [(OP_PONG, b"hb")]
    assert w.closed


def test_msg_parser_measures_the_last_message_and_owes_pongs() -> None:
    p = MsgParser()
    payload = b'{"data":"' + b"%019d" % 99 + b'x","type":"chat"}'
    msg = b"MSG chat.1.a 1 %d\r\n%s\r\n" % (len(payload), payload)
    assert p.feed(b"PING\r\n" + msg + msg[:10]) == [payload]
    assert p.owed == b"PONG\r\n"
    assert p.size == len(msg) and p.mark == msg[:msg.index(b"\n") + 1]
    assert p.feed(msg[10:]) == [payload] and p.buf == b""
    assert stamp(payload) == 99
