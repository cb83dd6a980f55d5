// Routes the page by its path: the server answers every app path with the
// same page.

import { home } from "./home";
import { notFound, oauthCallback, verify } from "./pages";
import { room } from "./room";

const path = location.pathname;
const meeting = /^\/m\/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$/.exec(path);
if (path === "/") void home();
else if (path === "/verify") void verify();
else if (path === "/oauth/callback") void oauthCallback();
else if (meeting) void room(meeting[1]);
else notFound();
