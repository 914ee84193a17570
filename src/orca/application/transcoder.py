"""The library's JSON event format, read with msgspec.

Stored events keep exactly the shape ``JSONTranscoder`` writes (values it cannot put in JSON
as ``{"_type_": name, "_data_": data}``); only decoding is faster, which every aggregate load
and every projected event pays for.
"""

from __future__ import annotations

from typing import Any

import msgspec
from eventsourcing.persistence import JSONTranscoder

_decoder = msgspec.json.Decoder()


class MsgspecJSONTranscoder(JSONTranscoder):
    def decode(self, data: bytes) -> Any:
        try:
            state = _decoder.decode(data)
        except msgspec.DecodeError:  # JSON that only Python's parser reads (NaN, Infinity)
            return super().decode(data)
        return self._restore(state) if type(state) is dict or type(state) is list else state

    def _restore(self, value: Any) -> Any:
        """Turn tagged values back into objects, depth first as ``json``'s hook does."""
        if type(value) is list:
            return [
                self._restore(item) if type(item) is dict or type(item) is list else item
                for item in value
            ]
        names = self.names
        for key, item in value.items():
            if type(item) is dict:
                name, data = item.get("_type_"), item.get("_data_")
                if len(item) == 2 and type(data) is str and type(name) is str and name in names:
                    value[key] = names[name].decode(data)  # the usual case, without recursing
                else:
                    value[key] = self._restore(item)
            elif type(item) is list:
                value[key] = self._restore(item)
        if len(value) == 2 and "_type_" in value and "_data_" in value:
            return self._decode_obj(value)
        return value
