local crypto = require "sacm.crypto"

describe("sacm.crypto", function()
  it("computes standard digests (FIPS 180 test vectors)", function()
    assert.equal("a9993e364706816aba3e25717850c26c9cd0d89d", crypto.hex(crypto.sha1("abc")))
    assert.equal("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad", crypto.hex(crypto.sha256("abc")))
    assert.equal(64, #crypto.sha512(""))
    assert.has_error(function() crypto.digest("no-such-digest", "x") end)
  end)

  it("computes HMAC (RFC 4231 case 2)", function()
    assert.equal("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      crypto.hex(crypto.hmac("sha256", "Jefe", "what do ya want for nothing?")))
  end)

  it("round-trips base64 and rejects garbage", function()
    for _, s in ipairs({ "", "f", "fo", "foo", "foob", "fooba", "foobar", "\0\255\1binary" }) do
      assert.equal(s, crypto.base64_decode(crypto.base64_encode(s)))
    end
    assert.equal("Zm9vYmFy", crypto.base64_encode("foobar"))
    assert.equal("foobar", crypto.base64_decode("Zm9v\nYmFy"))
    local v, err = crypto.base64_decode("Zm9v!mFy")
    assert.is_nil(v)
    assert.equal("bad-format", err.condition)
    assert.is_nil((crypto.base64_decode("Zm9")))
  end)

  it("XEP-0115 example verification string", function()
    -- XEP-0115 section 5.2: S = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<..."
    local s = "client/pc//Exodus 0.9.1<http://jabber.org/protocol/caps<http://jabber.org/protocol/disco#info<" ..
      "http://jabber.org/protocol/disco#items<http://jabber.org/protocol/muc<"
    assert.equal("QgayPKawpkPSDYmwT/WM94uAlu0=", crypto.base64_encode(crypto.sha1(s)))
  end)

  it("makes version-4 UUIDs that differ", function()
    local seen = {}
    for _ = 1, 200 do
      local u = crypto.uuid()
      assert.matches("^%x%x%x%x%x%x%x%x%-%x%x%x%x%-4%x%x%x%-[89ab]%x%x%x%-%x%x%x%x%x%x%x%x%x%x%x%x$", u)
      assert.is_nil(seen[u])
      seen[u] = true
    end
  end)

  it("converts hex both ways", function()
    assert.equal("\1\171\255", crypto.from_hex("01abff"))
    assert.is_nil((crypto.from_hex("0g")))
  end)

  it("derives PBKDF2-HMAC keys (published SHA-256 test vectors)", function()
    assert.equal("120fb6cffcf8b32c43e7225256c4f837a86548c92ccc35480805987cb70be17b",
      crypto.hex(crypto.pbkdf2("sha256", "password", "salt", 1, 32)))
    assert.equal("ae4d0c95af6b46d32d0adff928f06dd02a303f8ef3c251dfd6e2d85a95474c43",
      crypto.hex(crypto.pbkdf2("sha256", "password", "salt", 2, 32)))
    assert.has_error(function() crypto.pbkdf2("sha256", "p", "s", 0, 32) end)
    assert.has_error(function() crypto.pbkdf2("sha256", "p", "s", 1, 2000) end)
  end)
end)
