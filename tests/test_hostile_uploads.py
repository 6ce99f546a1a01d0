"""Hostile and unusual uploads sent to a real running app (`python app.py`, offline: the shipped default
model and the embedded sample) through gradio_client, and through raw HTTP for the file names the
client cannot send. Every case must end in a correct result (values checked) or a refusal that says
what was wrong and what to do; no message may show a server path, an environment value or a
traceback; and afterwards the app must still serve with no unexpected traceback in its log.

File names, as far as the client and HTTP allow: gradio_client sends only a file's base name, so
`../` can only travel in a hand-made multipart request; gradio then keeps the last path part and
drops NUL bytes. A name that is not valid UTF-8 cannot be sent by gradio_client at all (httpx raises
UnicodeEncodeError on the client before anything is sent); sent raw, the server reads the bytes as
Latin-1, so the app sees a harmless name such as 'éÿ.png'.
"""
import os
import re
import uuid
import warnings

import numpy as np
import pytest
from app_fixtures import demo_pair, offline_app, offline_env  # noqa: F401
from hostile_cases import Case, cases, enc, photo
from leaks import scan
from PIL import Image

from services.images import BadImage, decode_image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402

pytestmark = pytest.mark.reliability

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFUSED = "❌ This image cannot be used: "
ACTION = re.compile(r"; (please )?(upload|open it|save|resize)")  # every refusal ends with what to do
CLIENT_NAMES = ["café ☃.png", "<img src=x onerror=alert(1)>.png", "new\nline.png", "quote'\"s.png",
                "%2e%2e%2fencoded.png", "x" * 200 + ".png"]
# multipart file names only a hand-made request sends (ESCAPE: a unique name, checked for afterwards)
RAW_NAMES = [b"../../ESCAPE", b"/tmp/ESCAPE", b"..\\..\\ESCAPE", b"\xe9\xff.png", b"nul\x00byte.png",
             b"../" * 30 + b"etc/passwd.png"]


def leaks(text: str, secrets: list[str]) -> list[str]:
    """What in a visitor's message should not be there: tracebacks, server paths, environment values
    (tests/leaks.py, which counts the message for the session summary), and raw HTML."""
    found = scan(text, secrets)
    found += ["raw HTML"] if re.search(r"<\s*[a-z!/]", text, re.I) else []
    return found


def model_input(path: str) -> np.ndarray:
    """The 32x32 image the model saw: the page shows it enlarged 5x (nearest neighbour)."""
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)[::5, ::5]


def check(case: Case, status: str, out, seen: dict) -> list[str]:
    """Problems with one answer (an empty list when the answer is right)."""
    if case.expect == "refused" or (case.expect == "either" and status.startswith(REFUSED)):
        if not status.startswith(REFUSED) or case.text not in status or not ACTION.search(status):
            return [f"refusal without what/what to do: {status!r}"]
        return []
    if case.expect not in ("ok", "either"):
        return [f"expected {case.expect}, got {status!r}"]
    head, info = status.splitlines()[0], out[10]
    problems = []
    if not (head.startswith("**uploaded ") and head.endswith(")**")) or case.text not in status:
        problems.append(f"status {status!r}")
    if case.mode and f" {case.mode}, " not in head and not head.endswith(f" {case.mode})**"):
        problems.append(f"mode {case.mode} not named in {head!r}")
    if case.size and f"({case.size[0]}×{case.size[1]} " not in head:
        problems.append(f"size {case.size} not named in {head!r}")
    if not isinstance(info, dict) or info.get("embedding_dim") != 512 or len(info.get("embedding", [])) != 512 \
            or len(info.get("neighbours", [])) != 8 or not np.isfinite(info["embedding"]).all():
        return problems + [f"no 512-d embedding with 8 neighbours: {str(info)[:200]}"]
    pixels = seen[case.name] = model_input(out[1])
    if case.colour and np.abs(pixels - np.asarray(case.colour)).max() > 6:  # the page's picture is lossy WebP
        problems.append(f"model input is not {case.colour}: mean {pixels.reshape(-1, 3).mean(0).round(1)}")
    if case.same_as:
        diff = np.abs(pixels - seen[case.same_as]).mean()
        if diff > (0 if case.name.endswith(".png") else 4):  # JPEG re-encodes the turned picture: nearly equal
            problems.append(f"EXIF orientation not applied: mean difference {diff:.1f} from {case.same_as}")
    return problems


def upload(client, folder, name: str, data: bytes, checkpoint):
    d = folder / uuid.uuid4().hex[:8]  # one folder per case: the file keeps its exact name
    d.mkdir()
    (d / name).write_bytes(data)
    return client.predict(image=handle_file(str(d / name)), checkpoint=checkpoint, api_name="/explore_upload")


def raw_upload(url: str, name: bytes, data: bytes, checkpoint) -> tuple[str, list]:
    """A multipart upload with a file name gradio_client would never send, then /explore_upload on it."""
    import json

    import httpx

    body = (b'--b0undary\r\nContent-Disposition: form-data; name="files"; filename="' + name +
            b'"\r\nContent-Type: image/png\r\n\r\n' + data + b"\r\n--b0undary--\r\n")
    r = httpx.post(url + "gradio_api/upload", content=body, timeout=30,
                   headers={"content-type": "multipart/form-data; boundary=b0undary"})
    r.raise_for_status()
    stored = r.json()[0]
    r = httpx.post(url + "gradio_api/call/explore_upload", timeout=30,
                   json={"data": [{"path": stored, "meta": {"_type": "gradio.FileData"}}, checkpoint]})
    event = r.json()["event_id"]
    text = httpx.get(url + f"gradio_api/call/explore_upload/{event}", timeout=60).text
    assert "event: complete" in text, text[:500]
    return stored, json.loads(text.split("data:", 1)[1].strip().splitlines()[0])


def unexpected_tracebacks(log: str) -> list[str]:
    """The exception line of every traceback in the log, but gradio's own refusals of a file's type."""
    blocks = re.split(r"^Traceback \(most recent call last\):$", log, flags=re.M)[1:]
    ends = [next((ln for ln in b.splitlines() if ln.strip() and not ln.startswith(" ")), "") for b in blocks]
    return [e for e in ends if not e.startswith("gradio.exceptions.Error: \"Invalid file type")]


@pytest.fixture(scope="module")
def client(offline_app):  # noqa: F811
    return Client(offline_app.url, verbose=False)


def send_cases(client, folder, ckpt, secrets) -> dict:
    """Every generated case through gradio_client: case name -> problems (empty when handled)."""
    problems, seen = {}, {}
    for case in cases():
        try:
            out = upload(client, folder, case.name, case.data, ckpt)
        except Exception as e:  # gradio itself refuses some files (type, size) before the app sees them
            ok = case.expect == "gradio" and case.text in str(e)
            problems[case.name] = [] if ok else [f"{type(e).__name__}: {str(e)[:300]}"]
            continue
        problems[case.name] = check(case, out[0], out, seen) + leaks(out[0], secrets)
    return problems


def named_right(status: str, info: dict) -> list[str]:
    """The upload of hostile_cases.photo() under an odd name: analysed, the name shown without a path."""
    head = status.splitlines()[0]
    ok = head.startswith("**uploaded ") and head.endswith(" (96×64 RGB, PNG)**") and "/" not in head and \
        len(info["neighbours"]) == 8
    return [] if ok else [f"status {status[:200]!r}"]


def send_names(client, url, folder, ckpt, secrets) -> dict:
    """Odd file names: through the client (it sends base names only), then raw HTTP for the rest."""
    png, problems = enc(photo(), "PNG"), {}
    for name in CLIENT_NAMES:
        out = upload(client, folder, name, png, ckpt)
        problems[repr(name)] = leaks(out[0], secrets) + named_right(out[0], out[10])
    with pytest.raises(UnicodeEncodeError):  # see the module's docstring: the client cannot send this name
        upload(client, folder, "latin1-" + os.fsdecode(b"\xe9\xff") + ".png", png, ckpt)
    escape = f"vicreg-hostile-{uuid.uuid4().hex[:8]}.png"
    gradio_tmp = os.environ.get("GRADIO_TEMP_DIR") or os.path.join(os.path.realpath("/tmp"), "gradio")
    for name in RAW_NAMES:
        stored, data = raw_upload(url, name.replace(b"ESCAPE", escape.encode()), png, ckpt)
        kept = os.path.dirname(os.path.dirname(os.path.realpath(stored))) == gradio_tmp  # <temp>/<hash>/<name>
        problems[repr(name)] = leaks(data[0], secrets) + named_right(data[0], data[10]) + \
            ([] if kept else [f"stored at {stored}"])
    for where in ("/tmp", os.path.dirname(gradio_tmp), str(folder)):
        assert not os.path.exists(os.path.join(where, escape))
    return problems


def test_hostile_uploads(offline_app, demo_pair, client, tmp_path):  # noqa: F811
    env = offline_env(offline_app.folder, demo_pair)
    secrets = [v for v in env.values() if len(v) > 3] + [ROOT, offline_app.folder, str(tmp_path)]
    ckpt = offline_app.default
    problems = send_cases(client, tmp_path, ckpt, secrets)
    problems.update(send_names(client, offline_app.url, tmp_path, ckpt, secrets))
    big = tmp_path / "huge.png"  # over the upload size limit (20 MB): gradio refuses it with HTTP 413
    big.write_bytes(enc(photo(), "PNG") + os.urandom(21 * 1024 * 1024))
    try:
        client.predict(image=handle_file(str(big)), checkpoint=ckpt, api_name="/explore_upload")
        problems["huge.png"] = ["accepted"]
    except Exception as e:
        problems["huge.png"] = [] if re.search("(?i)size|large|413", str(e)) else [str(e)[:300]]
    failed = {k: v for k, v in problems.items() if v}
    print(f"\nuploads handled {len(problems) - len(failed)}/{len(problems)}")
    assert not failed, "\n".join(f"{k}: {v}" for k, v in failed.items())
    assert len(problems) >= 50
    # the app is alive, still answers a normal upload, and logged no traceback of its own
    assert offline_app.proc.poll() is None
    out = upload(client, tmp_path, "after.png", enc(photo(), "JPEG"), ckpt)
    assert out[0].startswith("**uploaded after.png (96×64 RGB, JPEG)**") and len(out[10]["neighbours"]) == 8
    log = offline_app.tail(10**8)
    assert unexpected_tracebacks(log) == [], log[-4000:]


def test_decoder_fuzz_gives_a_result_or_a_message():
    """Bit flips and cuts in many formats, in process: PIL's plugins raise all sorts of exceptions on such
    files (a TIFF header gave TypeError), and each must become a BadImage, never escape."""
    rng = np.random.default_rng(7)
    pic = photo(48, 40)
    bases = [enc(pic, "JPEG"), enc(pic, "PNG"), enc(pic, "WEBP"), enc(pic.convert("P"), "GIF"), enc(pic, "BMP"),
             enc(pic, "TIFF"), enc(pic, "TIFF", compression="tiff_lzw"), enc(pic, "ICO"), enc(pic, "PCX"),
             enc(pic, "PNG", save_all=True, append_images=[pic.rotate(90)])]
    outcomes = {"ok": 0, "refused": 0}
    for data in bases:
        for k in range(60):
            b = bytearray(data)
            for pos in rng.integers(0, min(len(b), 300) if k % 2 else len(b), int(rng.integers(1, 10))):
                b[pos] ^= 1 << int(rng.integers(0, 8))
            b = b[: int(rng.integers(1, len(b)))] if k % 5 == 0 else b
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # PIL warns about odd TIFF tags; only the outcome counts here
                    d = decode_image(bytes(b))
                assert d.pixels.shape == (3, 32, 32)
                outcomes["ok"] += 1
            except BadImage as e:
                assert ACTION.search(str(e)), str(e)
                outcomes["refused"] += 1
    print(f"\nfuzzed decodes: {outcomes}")
    assert sum(outcomes.values()) == 600 and min(outcomes.values()) > 50

